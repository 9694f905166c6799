// The connection breaks under a step's commit (a terminated backend, as during a failover or a
// pooler restart): the engine must not leave the instance running until its lease expires.
// A trigger terminates its own backend the first time it sees a marked state, so the break lands
// exactly inside the commit's transaction, once.
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine } from "../../src/index.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const runs: Record<string, number> = {};
const count = (key: string) => (runs[key] = (runs[key] ?? 0) + 1);

const State = z.object({ kill: z.boolean().optional() });
const Breaks = defineMachine({
  name: "BrokenCommits",
  queue: "broken",
  state: State,
  steps: {
    start: (ctx) => {
      count(`${ctx.id}:start`);
      return ctx.await("go", "finish", { kill: true });
    },
    finish: (ctx) => ctx.done("finished"),
  },
});
const TxBreaks = defineMachine({
  name: "BrokenTransactional",
  queue: "broken",
  state: State,
  steps: {
    start: {
      transactional: true,
      run: async (ctx) => {
        count(`${ctx.id}:start:${ctx.attempt}`);
        await ctx.client.query(`insert into ${s}.tx_effects (instance_id) values ($1)`, [ctx.id]);
        return ctx.next("finish", { kill: true });
      },
    },
    finish: (ctx) => ctx.done("finished"),
  },
});

await db.pool.query(`
  create table ${s}.tx_effects (instance_id bigint not null);
  create sequence ${s}.kill_once;
  create function ${s}.kill_once() returns trigger language plpgsql as $$
  begin
    if new.state->>'kill' = 'true' and new.status <> 'running' then
      if nextval('${s}.kill_once') = 1 then perform pg_terminate_backend(pg_backend_pid()); end if;
    end if;
    return new;
  end $$;
  create trigger kill_once before update on ${s}.instances for each row execute function ${s}.kill_once();`);
afterAll(() => db.pool.query(`drop trigger if exists kill_once on ${s}.instances`).then(() => undefined));

// A lease far longer than any wait below: an instance left running would fail the test.
const worker = db.engine({ queues: { broken: 2 }, machines: [Breaks, TxBreaks], leaseDuration: "60s" });
const client = db.engine();
await worker.start();
await client.start();

describe("a connection that breaks under a step's commit", () => {
  it("commits an await again on a fresh connection, without running the step again", async () => {
    await db.pool.query(`alter sequence ${s}.kill_once restart`);
    const { id } = await client.insert(Breaks, { state: {} });
    const deadline = Date.now() + 10_000;
    while ((await client.get(id))?.status !== "awaiting") {
      if (Date.now() > deadline)
        throw new Error(`instance ${id} is still ${(await client.get(id))?.status} after 10 s`);
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect((await db.pool.query(`select last_value::int as n from ${s}.kill_once`)).rows[0].n).toBe(2);
    await client.signal({ id }, "go");
    expect((await client.wait(id, { timeout: 10_000 })).result).toBe("finished");
    expect(runs[`${id}:start`]).toBe(1);
    expect((await client.history(id)).map((t) => t.outcome)).toEqual(["await", "resumed", "done"]);
  });

  it("fails a transactional step's attempt at once, counted, and retries it", async () => {
    await db.pool.query(`alter sequence ${s}.kill_once restart`);
    const { id } = await client.insert(TxBreaks, { state: {} });
    expect((await client.wait(id, { timeout: 10_000 })).result).toBe("finished");
    // Its code ran (so the attempt counts: a step that breaks its connection every time runs out
    // of attempts); its effect committed once, since the first rolled back with the connection.
    expect([runs[`${id}:start:1`], runs[`${id}:start:2`]]).toEqual([1, 1]);
    expect(
      (await db.pool.query(`select count(*)::int as n from ${s}.tx_effects where instance_id = $1`, [id])).rows[0].n,
    ).toBe(1);
    const history = await client.history(id);
    expect(history.map((t) => t.outcome)).toEqual(["error", "next", "done"]);
    expect(history[0]!.error?.message).toMatch(/the connection broke under the step's transaction/);
  });
});
