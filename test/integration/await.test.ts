// Await specs beyond one event: sets, packs, and timeouts racing signals.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, ValidationError } from "../../src/index.js";
import { fireTimeouts } from "../../src/runtime/signals.js";
import { signalQueries } from "../../src/sql/signals.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const state = z.object({ wait: z.string() });
const result = (ctx: { step: string; awaited: readonly { event: string; payload: unknown }[] }) => ({
  step: ctx.step,
  awaited: ctx.awaited.map((s) => `${s.event}:${String(s.payload)}`),
});

const Awaiter = defineMachine({
  name: "Awaiter",
  queue: "await",
  state,
  steps: {
    start: (ctx) => {
      switch (ctx.state.wait) {
        case "all":
          return ctx.await({ all: ["a", "b", "c"] }, "resumed");
        case "any":
          return ctx.await({ any: ["a", "b"] }, "resumed");
        case "pack":
          return ctx.await({ event: "item", count: 3 }, "resumed");
        case "pack-timeout":
          return ctx.await({ event: "item", count: 3 }, "resumed", undefined, { timeout: 300, onTimeout: "late" });
        case "bad-timeout":
          return ctx.await("go", "resumed", undefined, { timeout: 100 } as never);
        default:
          return ctx.await({ all: [] } as never, "resumed");
      }
    },
    resumed: (ctx) => ctx.done(result(ctx)),
    late: (ctx) => ctx.done(result(ctx)),
  },
});

const engine = db.engine({ queues: { await: 10 }, machines: [Awaiter], pollInterval: 50 });
await engine.start();
const parked = (id: string) => eventually(`${id} awaiting`, async () => (await engine.get(id))?.status === "awaiting");

describe("await specs", () => {
  it("a set { all } waits for one of each, in any order, and lists them in arrival order", async () => {
    const { id } = await engine.insert(Awaiter, { state: { wait: "all" } });
    await parked(id);
    await engine.signal({ id }, "c", 1);
    await engine.signal({ id }, "a", 2);
    await engine.signal({ id }, "a", 3);
    expect((await engine.explain(id)).reasons[0]).toBe(
      'awaiting signals: all of "a", "b", "c"; arrived so far: 2 × "a", 1 × "c"',
    );
    expect((await engine.get(id))?.status).toBe("awaiting");
    await engine.signal({ id }, "b", 4);
    expect((await engine.wait(id, { timeout: 5000 })).result).toEqual({
      step: "resumed",
      awaited: ["c:1", "a:2", "b:4"],
    });
    const left = await db.pool.query(
      `select event, payload from ${db.schema}.signals where instance_id = $1 and consumed_at is null`,
      [id],
    );
    expect(left.rows).toEqual([{ event: "a", payload: 3 }]);
  });

  it("a set { any } resumes on the first of them", async () => {
    const { id } = await engine.insert(Awaiter, { state: { wait: "any" } });
    await parked(id);
    await engine.signal({ id }, "z", 0);
    await engine.signal({ id }, "b", 1);
    expect((await engine.wait(id, { timeout: 5000 })).result).toEqual({ step: "resumed", awaited: ["b:1"] });
  });

  it("a pack consumes exactly count signals together", async () => {
    // All four arrive before the await: inserted and signalled in one transaction, so the
    // instance cannot consume three and finish before the fourth is sent.
    const client = await db.pool.connect();
    let id: string;
    try {
      await client.query("begin");
      ({ id } = await engine.insert(Awaiter, { state: { wait: "pack" }, client }));
      for (let i = 1; i <= 4; i++) await engine.signal({ id }, "item", i, { client });
      await client.query("commit");
    } finally {
      client.release();
    }
    expect((await engine.wait(id, { timeout: 5000 })).result).toEqual({
      step: "resumed",
      awaited: ["item:1", "item:2", "item:3"],
    });
  });

  it("a timeout resumes onTimeout with whatever had arrived", async () => {
    const { id } = await engine.insert(Awaiter, { state: { wait: "pack-timeout" } });
    await parked(id);
    await engine.signal({ id }, "item", 1);
    await engine.signal({ id }, "item", 2);
    expect((await engine.explain(id)).reasons[1]).toMatch(/^times out at .*, then runs step "late"$/);
    const done = await engine.wait(id, { timeout: 5000 });
    expect(done.result).toEqual({ step: "late", awaited: ["item:1", "item:2"] });
    expect((await engine.history(id)).map((h) => [h.fromStep, h.toStep, h.outcome])).toEqual([
      ["start", "resumed", "await"],
      ["resumed", "late", "timeout"],
      ["late", null, "done"],
    ]);
  });

  it("a timeout and a last signal racing resolve to exactly one of the two (200 races)", async () => {
    // Instances parked on "go" (written directly, in a queue no engine runs), whose timeout is due
    // at `runAt`: the engine's timeouts loop takes part in the race too.
    const park = async (n: number, runAt: string) =>
      (
        await db.pool.query(
          `insert into ${db.schema}.instances (machine, step, state, status, queue, run_at, await_spec)
           select 'Awaiter', 'resumed', '{"wait": "race"}', 'awaiting', 'parked', ${runAt},
                  '{"mode": "one", "events": ["go"], "count": 1, "onTimeout": "late"}'
           from generate_series(1, $1::int) returning id::text as id`,
          [n],
        )
      ).rows.map((r) => r.id as string);
    const q = signalQueries(db.schema);
    const sweep = async () => {
      while ((await fireTimeouts(db.pool, q, 100)).length > 0);
    };
    // Each outcome at least once, whatever the timing: five signalled before their timeout is due,
    // five signalled after theirs fired.
    const signalFirst = await park(5, "now() + interval '1 hour'");
    const timeoutFirst = await park(5, "now() - interval '1 hour'");
    await sweep();
    const racing = await park(190, "now() - interval '1 second'");
    const ids = [...signalFirst, ...timeoutFirst, ...racing];
    for (const id of [...signalFirst, ...timeoutFirst]) await engine.signal({ id }, "go", ids.indexOf(id));
    // Then two timeout sweepers and 190 signals at once.
    await Promise.all([
      fireTimeouts(db.pool, q, 10),
      ...racing.map((id) => engine.signal({ id }, "go", ids.indexOf(id))),
      fireTimeouts(db.pool, q, 10),
    ]);
    await sweep();
    const outcomes = new Map<string, string>();
    for (const [i, id] of ids.entries()) {
      const row = (await db.pool.query(`select status, step, awaited from ${db.schema}.instances where id = $1`, [id]))
        .rows[0];
      const history = (await engine.history(id)).map((h) => h.outcome);
      const mailbox = (
        await db.pool.query(`select payload from ${db.schema}.signals where instance_id = $1 and consumed_at is null`, [
          id,
        ])
      ).rows;
      expect(history).toHaveLength(1);
      expect(row.status).toBe("runnable");
      outcomes.set(id, history[0]!);
      if (history[0] === "resumed") {
        expect(row.step).toBe("resumed");
        expect(row.awaited.map((s: { payload: number }) => s.payload)).toEqual([i]);
        expect(mailbox).toEqual([]);
      } else {
        expect(history[0]).toBe("timeout");
        expect(row.step).toBe("late");
        expect(row.awaited).toEqual([]);
        expect(mailbox).toEqual([{ payload: i }]); // the late signal is kept, not lost and not consumed
      }
    }
    expect(signalFirst.map((id) => outcomes.get(id))).toEqual(Array(5).fill("resumed"));
    expect(timeoutFirst.map((id) => outcomes.get(id))).toEqual(Array(5).fill("timeout"));
  });

  it("rejects malformed awaits: the attempt fails with a clear error", async () => {
    for (const wait of ["bad-timeout", "bad-spec"]) {
      const { id } = await engine.insert(Awaiter, { state: { wait } });
      await eventually(`${wait} failed`, async () => (await engine.get(id))?.error);
      const row = await engine.get(id);
      expect(row?.error?.name).toBe(ValidationError.name);
      expect(row?.error?.message).toMatch(
        wait === "bad-timeout" ? /needs both timeout and onTimeout/ : /needs a non-empty array of event names/,
      );
      await engine.cancel(id);
    }
  });
});
