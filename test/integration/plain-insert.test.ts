// Rows without any key go in by a statement of their own (insertPlain): the same rows as the
// general insert writes, and the same wake-ups.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine } from "../../src/index.js";
import { plainRows } from "../../src/sql/instances.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { PLAIN_ROW } from "../support/insert-row.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

const Plain = defineJob({ name: "Plain", queue: "plain", args: z.object({ n: z.number() }), perform: (a) => a.n });
const Shaped = defineMachine({
  name: "Shaped",
  queue: "plain",
  state: z.object({ tag: z.string() }),
  maxAttempts: 4,
  steps: { start: (ctx) => ctx.done(ctx.state.tag) },
});

/** Every column that an insert decides, the id and times aside. */
const COLUMNS = `machine, step, state, queue, priority, status, attempt, max_attempts, concurrency_key,
  concurrency_limit, parent_id, trace_context, version, unvalidated, claimed_ahead, ahead_returns,
  run_at > now() + interval '30 minutes' as later`;

describe("plain inserts", () => {
  it("write the same rows as the general insert, option for option", async () => {
    const client = db.engine({ poolSize: 2 });
    const options = [
      {},
      { priority: -3, maxAttempts: 2 },
      { delay: "1h" as const },
      { runAt: new Date(Date.now() + 3_600_000), queue: "other" },
    ];
    for (const [k, extra] of options.entries()) {
      // An idempotency key sends the same row through the general statement.
      const plain = await client.insert(Shaped, { state: { tag: `t${k}` }, ...extra });
      const general = await client.insert(Shaped, { state: { tag: `t${k}` }, ...extra, idempotencyKey: `k${k}` });
      const row = async (id: string) =>
        (await db.pool.query(`select ${COLUMNS} from ${s}.instances where id = $1`, [id])).rows[0];
      expect(await row(plain.id)).toEqual(await row(general.id));
    }
    // A batch of many: ids in input order, all inserted.
    const many = await client.insertMany(Array.from({ length: 50 }, (_, n) => ({ machine: Plain, args: { n } })));
    expect(many.every((r) => r.inserted)).toBe(true);
    const { rows } = await db.pool.query(
      `select state->>'n' as n from ${s}.instances where id = any($1::bigint[]) order by id`,
      [many.map((r) => r.id)],
    );
    expect(rows.map((r) => Number(r.n))).toEqual(Array.from({ length: 50 }, (_, n) => n));
  });

  it("take only rows without keys; a batch with one keyed row goes the general way", () => {
    const row = PLAIN_ROW;
    expect(plainRows([row, { ...row, idx: 1 }])).toBe(true);
    for (const key of [
      { correlation_key: "c" },
      { concurrency_key: "k" },
      { idempotency_key: "i" },
      { parent_id: "1" },
    ]) {
      expect(plainRows([row, { ...row, idx: 1, ...key }])).toBe(false);
    }
  });

  it("wake a node from a pure client, which then runs the job", async () => {
    const client = db.engine({ poolSize: 2 });
    const node = db.engine({ queues: { plain: 2 }, machines: [Plain, Shaped], poolSize: 3, pollInterval: 60_000 });
    await node.start();
    try {
      // The poll is an hour away: only the insert's NOTIFY can wake the node in time.
      const { id } = await client.insert(Plain, { args: { n: 7 } });
      expect((await client.wait(id, { timeout: 10_000 })).result).toBe(7);
      const [a, b] = await client.insertMany([
        { machine: Plain, args: { n: 8 } },
        { machine: Plain, args: { n: 9 } },
      ]);
      for (const [r, n] of [
        [a!, 8],
        [b!, 9],
      ] as const)
        expect((await client.wait(r.id, { timeout: 10_000 })).result).toBe(n);
      await eventually("all done", async () => {
        const { rows } = await db.pool.query(
          `select count(*)::int as n from ${s}.instances where machine = 'Plain' and status = 'done'`,
        );
        return rows[0].n >= 3;
      });
    } finally {
      await node.stop();
    }
  });
});
