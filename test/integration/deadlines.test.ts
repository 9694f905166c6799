// Deadlines on the engine's clock: ctx.await's until, ctx.now(), ctx.resumedBy, and advanceTime
// firing every timer of its span in order.
import pg from "pg";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, GenDurable } from "../../src/index.js";
import { advanceTime, drain } from "../../src/testing/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const DAY = 86_400_000;

const seen: Array<{ step: string; resumedBy: string | undefined; now: number; events: string[] }> = [];
const note = (ctx: {
  step: string;
  resumedBy: "signal" | "timeout" | undefined;
  now(): Date;
  awaited: readonly { event: string }[];
}) =>
  seen.push({
    step: ctx.step,
    resumedBy: ctx.resumedBy,
    now: ctx.now().getTime(),
    events: ctx.awaited.map((s) => s.event),
  });

// A trial: 30 days to pay; questions are answered and the wait goes on, to the same deadline.
const Trial = defineMachine({
  name: "Trial",
  queue: "time",
  state: z.object({ endsAt: z.string().default(""), questions: z.number().default(0) }),
  steps: {
    start: (ctx) => {
      note(ctx);
      const endsAt = new Date(ctx.now().getTime() + 30 * DAY).toISOString();
      return ctx.await(
        { any: ["paid", "question"] },
        "woke",
        { ...ctx.state, endsAt },
        { until: endsAt, onTimeout: "expire" },
      );
    },
    woke: (ctx) => {
      note(ctx);
      if (ctx.awaited[0]?.event === "paid") return ctx.done("paid");
      const state = { ...ctx.state, questions: ctx.state.questions + 1 };
      return ctx.await({ any: ["paid", "question"] }, "woke", state, { until: ctx.state.endsAt, onTimeout: "expire" });
    },
    expire: (ctx) => {
      note(ctx);
      return ctx.done({ expired: true, questions: ctx.state.questions });
    },
  },
});

// Timers that set the next one: a weekly reminder, and a 10-day await whose timeout waits again.
const Reminders = defineMachine({
  name: "Reminders",
  queue: "time",
  state: z.object({ n: z.number().default(0) }),
  steps: {
    start: (ctx) => (note(ctx), ctx.next("remind", ctx.state, { delay: "7d" })),
    remind: (ctx) => (note(ctx), ctx.next("remind", { n: ctx.state.n + 1 }, { delay: "7d" })),
  },
});
const Patience = defineMachine({
  name: "Patience",
  queue: "time",
  state: z.object({}),
  steps: {
    start: (ctx) => (note(ctx), ctx.await("never", "start", ctx.state, { timeout: "10d", onTimeout: "start" })),
  },
});

const Bad = defineMachine({
  name: "Bad",
  queue: "time",
  state: z.object({ until: z.string(), both: z.boolean() }),
  steps: {
    start: (ctx) =>
      ctx.await("x", "start", ctx.state, {
        until: ctx.state.until,
        ...(ctx.state.both ? { timeout: "1d" } : {}),
        onTimeout: "start",
      }),
  },
});

const engine = db.engine({ queues: { time: 4 }, machines: [Trial, Reminders, Patience, Bad] });
await engine.start();

describe("deadlines that survive re-waiting", () => {
  it("an await's until keeps the original deadline across signals; resumedBy says what woke the step", async () => {
    seen.length = 0;
    const { id } = await engine.insert(Trial, { state: {} });
    await drain(engine);
    await advanceTime(engine, "10d");
    await engine.signal({ id }, "question");
    await drain(engine);
    await advanceTime(engine, "19d");
    await engine.signal({ id }, "question");
    await drain(engine);
    // Day 29: still waiting on the deadline set on day 0, not on a fresh 30 days.
    expect((await engine.get(id))?.status).toBe("awaiting");
    await advanceTime(engine, "1d");
    await drain(engine);
    const end = await engine.get(id);
    expect(end?.status).toBe("done");
    expect(end?.result).toEqual({ expired: true, questions: 2 });
    expect(seen.map((s) => [s.step, s.resumedBy, s.events])).toEqual([
      ["start", undefined, []],
      ["woke", "signal", ["question"]],
      ["woke", "signal", ["question"]],
      ["expire", "timeout", []],
    ]);
    // ctx.now() moved with advanceTime: the expiry ran 30 days (of engine time) after the start.
    expect(seen[3]!.now - seen[0]!.now).toBeGreaterThanOrEqual(30 * DAY);
    expect(seen[3]!.now - seen[0]!.now).toBeLessThan(30 * DAY + 60_000);
    expect(seen[1]!.now - seen[0]!.now).toBeGreaterThanOrEqual(10 * DAY);
  });

  it("refuses until with timeout, and an until that is not a time", async () => {
    const both = await engine.insert(Bad, { state: { until: new Date().toISOString(), both: true } });
    const garbage = await engine.insert(Bad, { state: { until: "next tuesday", both: false } });
    await drain(engine).catch(() => {});
    await expect(engine.get(both.id)).resolves.toMatchObject({
      error: { message: expect.stringMatching(/ctx.await takes timeout or until, not both/) },
    });
    await expect(engine.get(garbage.id)).resolves.toMatchObject({
      error: {
        message: expect.stringMatching(/until must be a valid Date .* \(until was the string "next tuesday"\)/),
      },
    });
    await engine.cancel(both.id);
    await engine.cancel(garbage.id);
  });
});

describe("advanceTime fires every timer of its span, in order", () => {
  it("a weekly reminder fires four times in 30 days; a 10-day timeout that waits again fires twice, then once more at day 30", async () => {
    seen.length = 0;
    const reminders = await engine.insert(Reminders, { state: {} });
    const patience = await engine.insert(Patience, { state: {} });
    await drain(engine);
    const t0 = seen.find((s) => s.step === "start")!.now;
    await advanceTime(engine, "30d");
    await drain(engine);
    expect((await engine.get(reminders.id))?.state).toEqual({ n: 4 });
    const days = (step: string, from: typeof seen) =>
      from.filter((s) => s.step === step).map((s) => Math.floor((s.now - t0) / DAY));
    const remindersSeen = seen.filter((s) => s.step === "remind");
    expect(days("remind", remindersSeen)).toEqual([7, 14, 21, 28]);
    // Patience's starts: day 0, then its timeouts at days 10, 20 and 30 (the last one due at the span's end).
    const patienceStarts = seen.filter((s) => s.step === "start" && s.resumedBy !== undefined);
    expect(patienceStarts.map((s) => s.resumedBy)).toEqual(["timeout", "timeout", "timeout"]);
    expect(days("start", patienceStarts)).toEqual([10, 20, 30]);
    await engine.cancel(reminders.id);
    await engine.cancel(patience.id);
  });
});

describe("advanceTime and a step that comes due at its commit", () => {
  // The shift's commit makes rows due; the engine's poll may claim one before advanceTime has read
  // the new time back into the engine's clock. A CI run saw a weekly reminder's second run report
  // day 10 (the time before the shift) instead of day 14.
  it("the step's ctx.now() is already the new time", async () => {
    const ticks: number[] = [];
    const Tick = defineMachine({
      name: "ShiftTick",
      queue: "shift-tick",
      state: z.object({}),
      steps: {
        start: (ctx) => (ticks.push(ctx.now().getTime()), ctx.next("tick", ctx.state, { delay: "7d" })),
        tick: (ctx) => (ticks.push(ctx.now().getTime()), ctx.done()),
      },
    });
    // The engine's own pool, so that the test can hold back the clock's read after the shift.
    const pool = new pg.Pool({ connectionString: db.url, max: 4 });
    let held: Promise<void> | undefined;
    const query = pool.query.bind(pool) as (config: unknown) => Promise<unknown>;
    pool.query = (async (config: unknown) => {
      const text = (config as { text?: unknown } | null)?.text;
      if (held && typeof text === "string" && text.includes("clock_timestamp()")) await held;
      return query(config);
    }) as unknown as typeof pool.query;
    // A short poll: it claims the row as soon as the shift commits.
    const node = new GenDurable({
      pool,
      schema: db.schema,
      queues: { "shift-tick": 1 },
      machines: [Tick],
      pollInterval: "20ms",
    });
    await node.start();
    let release = () => {};
    try {
      const { id } = await node.insert(Tick, { state: {} });
      await eventually("the tick scheduled", async () => (await node.get(id))?.step === "tick");
      held = new Promise((resolve) => (release = resolve));
      const advanced = advanceTime(node, "7d");
      // The tick runs while advanceTime still waits for its read of the clock.
      await eventually("the tick ran", () => ticks.length === 2);
      release();
      held = undefined;
      await advanced;
      // Engine time from the start step to the tick: the 7 days the shift moved.
      expect(ticks[1]! - ticks[0]!).toBeGreaterThanOrEqual(7 * DAY);
    } finally {
      release();
      held = undefined;
      await node.stop();
      await pool.end();
    }
  });
});
