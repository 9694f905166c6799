// The outcome contract (docs/state-machines.md#the-outcome-contract), one behaviour per test, against real Postgres.
import { describe, expect, it } from "vitest";
import * as v from "valibot";
import { z } from "zod";
import { defineJob, defineMachine, type EngineEvents } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const counter = z.object({ n: z.number().int() });
const fast = { type: "fixed", delay: 0 } as const;

const Steps = defineMachine({
  name: "Steps",
  queue: "outcomes",
  state: counter,
  steps: {
    start: (ctx) => ctx.next("middle", { n: ctx.state.n + 1 }),
    middle: (ctx) => ctx.next("finish", { n: ctx.state.n * 10 }, { delay: 50 }),
    finish: (ctx) => ctx.done({ total: ctx.state.n }),
  },
});

let snoozes = 0;
const Snoozer = defineMachine({
  name: "Snoozer",
  queue: "outcomes",
  state: counter,
  steps: {
    start: (ctx) => {
      if (ctx.state.n === 0 && snoozes++ < 3) return ctx.snooze(10);
      return ctx.done({ attempt: ctx.attempt, snoozes });
    },
  },
});

const Flaky = defineMachine({
  name: "Flaky",
  queue: "outcomes",
  state: counter,
  maxAttempts: 3,
  backoff: fast,
  steps: {
    start: (ctx) => ctx.next("work", { n: 100 }),
    work: (ctx) => {
      if (ctx.attempt < ctx.state.n) throw new Error(`attempt ${ctx.attempt} failed`);
      return ctx.done({ attempt: ctx.attempt });
    },
  },
});

const Canceller = defineMachine({
  name: "Canceller",
  queue: "outcomes",
  state: counter,
  steps: { start: (ctx) => ctx.cancel(`no stock for ${ctx.state.n}`) },
});

const BadState = defineMachine({
  name: "BadState",
  queue: "outcomes",
  state: counter,
  maxAttempts: 2,
  backoff: fast,
  steps: {
    start: (ctx) => ctx.next("second", { n: 5 }),
    second: (ctx) => ctx.next("start", { n: "not a number" } as never),
  },
});

const BadReturn = defineMachine({
  name: "BadReturn",
  queue: "outcomes",
  state: counter,
  maxAttempts: 1,
  steps: { start: () => ({ next: "elsewhere" }) as never },
});

const BadStepName = defineMachine({
  name: "BadStepName",
  queue: "outcomes",
  state: counter,
  maxAttempts: 1,
  steps: { start: (ctx) => ctx.next("nowhere" as never) },
});

const Slow = defineMachine({
  name: "Slow",
  queue: "outcomes",
  state: counter,
  maxAttempts: 1,
  steps: {
    start: {
      timeout: 100,
      run: (ctx) =>
        new Promise((_, reject) => {
          ctx.abortSignal.addEventListener("abort", () => reject(ctx.abortSignal.reason));
        }),
    },
  },
});

const Valibot = defineMachine({
  name: "Valibot",
  queue: "outcomes",
  state: v.object({ name: v.pipe(v.string(), v.minLength(2)) }),
  steps: { start: (ctx) => ctx.done({ hello: ctx.state.name }) },
});

const Thrower = defineJob({
  name: "Thrower",
  queue: "outcomes",
  args: z.object({ what: z.string() }),
  maxAttempts: 1,
  perform: async (args) => {
    const cyclic: Record<string, unknown> = { what: args.what };
    cyclic.self = cyclic;
    if (args.what === "null") throw null;
    if (args.what === "string") throw "plain string";
    throw cyclic;
  },
});

const Job = defineJob({
  name: "Job",
  queue: "outcomes",
  args: z.object({ to: z.string() }),
  perform: async (args, ctx) => ({ sent: args.to, attempt: ctx.attempt }),
});

const Ledger = defineMachine({
  name: "Ledger",
  queue: "outcomes",
  state: z.object({ fail: z.boolean() }),
  maxAttempts: 1,
  steps: {
    start: {
      transactional: true,
      run: async (ctx) => {
        await ctx.client.query(`insert into ${db.schema}_ledger (instance_id) values ($1)`, [ctx.id]);
        if (ctx.state.fail) throw new Error("rolled back with the ledger row");
        return ctx.done();
      },
    },
  },
});

const NoClient = defineMachine({
  name: "NoClient",
  queue: "outcomes",
  state: counter,
  maxAttempts: 1,
  steps: { start: (ctx) => ctx.done(ctx.client) },
});

const machines = [
  Steps,
  Snoozer,
  Flaky,
  Canceller,
  BadState,
  BadReturn,
  BadStepName,
  Slow,
  Valibot,
  Thrower,
  Job,
  Ledger,
  NoClient,
];
await db.pool.query(`create table ${db.schema}_ledger (instance_id bigint)`);
const engine = db.engine({ queues: { outcomes: 8 }, machines });
const events: Array<{ name: keyof EngineEvents; payload: unknown }> = [];
for (const name of [
  "step:start",
  "step:stop",
  "step:exception",
  "instance:done",
  "instance:failed",
  "instance:cancelled",
] as const) {
  engine.on(name, (payload) => events.push({ name, payload }));
}
await engine.start();

describe("outcomes", () => {
  it("next commits each state and runs the named step; done stores the result", async () => {
    const { id } = await engine.insert(Steps, { state: { n: 1 } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done).toMatchObject({ status: "done", result: { total: 20 }, state: { n: 20 }, step: "finish" });
    const history = await engine.history(id);
    expect(history.map((h) => [h.fromStep, h.toStep, h.outcome, h.attempt])).toEqual([
      ["start", "middle", "next", 1],
      ["middle", "finish", "next", 1],
      ["finish", null, "done", 1],
    ]);
    expect(history[1]!.at.getTime()).toBeLessThanOrEqual(history[2]!.at.getTime() - 40); // the 50 ms delay, by database time
    // instance:done is emitted once the commit's reply is back, which can be after wait() saw the row done.
    const doneOf = () => events.filter((e) => e.name === "instance:done" && (e.payload as { id: string }).id === id);
    await eventually("instance:done event", () => doneOf().length > 0);
    expect(doneOf()).toHaveLength(1);
  });

  it("snooze runs the same step again without consuming an attempt", async () => {
    const { id } = await engine.insert(Snoozer, { state: { n: 0 } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.result).toEqual({ attempt: 1, snoozes: 4 });
    expect((await engine.history(id)).map((h) => h.outcome)).toEqual(["snooze", "snooze", "snooze", "done"]);
  });

  it("a thrown error is retried with backoff and succeeds within maxAttempts; state is not changed by failed attempts", async () => {
    const { id } = await engine.insert(Flaky, { state: { n: 0 } });
    const done = await engine.wait(id, { timeout: 10_000 });
    // n becomes 100 in start, so "work" always fails: exhausted after 3 attempts
    expect(done.status).toBe("failed");
    expect(done.error).toMatchObject({ name: "Error", message: "attempt 3 failed" });
    expect(done.state).toEqual({ n: 100 });
    const history = await engine.history(id);
    expect(history.map((h) => [h.outcome, h.attempt])).toEqual([
      ["next", 1],
      ["error", 1],
      ["error", 2],
      ["failed", 3],
    ]);
    expect(history[1]!.error?.message).toBe("attempt 1 failed");
  });

  it("retry() runs a failed step again with fresh attempts", async () => {
    const { id } = await engine.insert(Flaky, { state: { n: 0 } });
    await engine.wait(id, { timeout: 10_000 });
    await db.pool.query(`update ${db.schema}.instances set state = '{"n": 2}' where id = $1`, [id]);
    await engine.retry(id);
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done).toMatchObject({ status: "done", result: { attempt: 2 } });
    await expect(engine.retry(id)).rejects.toThrowError(/only failed instances can be retried/);
  });

  it("cancel from a step is terminal with the reason", async () => {
    const { id } = await engine.insert(Canceller, { state: { n: 7 } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done).toMatchObject({ status: "cancelled", error: { message: "no stock for 7" } });
  });

  it("an invalid new state fails the attempt with a clear error and never commits", async () => {
    const { id } = await engine.insert(BadState, { state: { n: 1 } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("failed");
    expect(done.state).toEqual({ n: 5 });
    expect(done.step).toBe("second");
    expect(done.error?.name).toBe("ValidationError");
    expect(done.error?.message).toMatch(/the new state from step "second" of machine "BadState" is invalid: n: /);
  });

  it("a step that returns something that is not an outcome fails naming the step and the value", async () => {
    const { id } = await engine.insert(BadReturn, { state: { n: 1 } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.error?.message).toMatch(
      /step "start" of machine "BadReturn" returned an object; a step must return ctx\.next/,
    );
  });

  it("next to a step that does not exist fails the attempt", async () => {
    const { id } = await engine.insert(BadStepName, { state: { n: 1 } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.error?.message).toMatch(
      /ctx\.next named "nowhere", which is not a step of the machine \(its steps: start\)/,
    );
  });

  it("a step over its timeout is aborted and counts as a failed attempt", async () => {
    const { id } = await engine.insert(Slow, { state: { n: 1 } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("failed");
    expect(done.error).toMatchObject({ name: "StepTimeoutError", code: "STEP_TIMEOUT" });
    expect(done.error?.message).toMatch(/ran longer than its timeout of 100 ms/);
  });

  it("valibot schemas validate state too", async () => {
    await expect(engine.insert(Valibot, { state: { name: "x" } })).rejects.toThrowError(/state of Valibot is invalid/);
    const { id } = await engine.insert(Valibot, { state: { name: "Ada" } });
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual({ hello: "Ada" });
  });

  it.each(["null", "string", "cyclic"])("anything thrown (%s) becomes a stored error record", async (what) => {
    const { id } = await engine.insert(Thrower, { args: { what } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("failed");
    expect(done.error!.message.length).toBeGreaterThan(0);
  });

  it("a job's return value is its result", async () => {
    const { id } = await engine.insert(Job, { args: { to: "a@b.c" } });
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual({ sent: "a@b.c", attempt: 1 });
  });

  it("a transactional step's writes commit with its outcome, or roll back with its failure", async () => {
    const ok = await engine.insert(Ledger, { state: { fail: false } });
    const bad = await engine.insert(Ledger, { state: { fail: true } });
    expect((await engine.wait(ok.id, { timeout: 10_000 })).status).toBe("done");
    expect((await engine.wait(bad.id, { timeout: 10_000 })).status).toBe("failed");
    const { rows } = await db.pool.query(`select instance_id::text as id from ${db.schema}_ledger`);
    expect(rows.map((r) => r.id)).toEqual([ok.id]);
  });

  it("ctx.client outside a transactional step is a clear error", async () => {
    const { id } = await engine.insert(NoClient, { state: { n: 1 } });
    expect((await engine.wait(id, { timeout: 10_000 })).error?.message).toMatch(
      /ctx\.client is only available in transactional steps/,
    );
  });

  it("emits step events with durations", async () => {
    const { id } = await engine.insert(Job, { args: { to: "x" } });
    await engine.wait(id, { timeout: 10_000 });
    await eventually("step:stop event", () =>
      events.some((e) => e.name === "step:stop" && (e.payload as { id: string }).id === id),
    );
    const stop = events.find((e) => e.name === "step:stop" && (e.payload as { id: string }).id === id)!.payload;
    expect(stop).toMatchObject({ machine: "Job", step: "perform", attempt: 1, outcome: "done" });
  });
});
