// Typed edges at run time: signal payloads checked when sent and when consumed, results checked before done,
// handles usable as ids, jobs without args.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine, InstanceTerminatedError, ValidationError } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

const Checkout = defineMachine({
  name: "Checkout",
  state: z.object({ order: z.number() }),
  signals: { payment_confirmed: z.object({ amount: z.number() }) },
  result: z.object({ charged: z.number() }),
  steps: {
    start: (ctx) => ctx.await("payment_confirmed", "paid"),
    paid: (ctx) => {
      const amount = ctx.awaited[0]!.payload.amount;
      // A negative amount makes a result its schema refuses (below): the attempt fails, done is never committed.
      return ctx.done({ charged: amount < 0 ? (String(amount) as unknown as number) : amount });
    },
  },
});

// Not registered on the sending engine: its payloads are checked when the step consumes them.
const Remote = defineMachine({
  name: "Remote",
  state: z.object({}),
  maxAttempts: 1,
  signals: { go: z.object({ n: z.number() }) },
  steps: {
    start: (ctx) => ctx.await("go", "after"),
    after: (ctx) => ctx.done({ n: ctx.awaited[0]!.payload.n }),
  },
});

const Tick = defineJob({ name: "Tick", perform: async (args) => ({ got: args }) });
const Typed = defineJob({
  name: "TypedResult",
  args: z.object({ n: z.number() }),
  result: z.number(),
  maxAttempts: 1,
  perform: async (args) => (args.n > 0 ? args.n : "negative"),
});

const engine = db.engine({ queues: { default: 4 }, machines: [Checkout, Tick, Typed] });
await engine.start();
// A second engine that runs Remote: the first one, which sends, does not know it.
const runner = db.engine({ queues: { default: 2 }, machines: [Remote] });
await runner.start();

describe("typed signals", () => {
  it("a typed signal checks its payload before sending, and the step sees it typed", async () => {
    const handle = await engine.insert(Checkout, { state: { order: 1 }, correlationKey: "order:1" });
    await eventually("parked", async () => (await engine.get(handle))?.status === "awaiting");
    // @ts-expect-error a wrong payload: refused at compile time and at run time
    await expect(engine.signal(Checkout, "order:1", "payment_confirmed", { amount: "5" })).rejects.toThrow(
      ValidationError,
    );
    // @ts-expect-error an undeclared event
    await expect(engine.signal(Checkout, "order:1", "shipped", {})).rejects.toThrow(/declares no signal "shipped"/);
    await engine.signal(Checkout, "order:1", "payment_confirmed", { amount: 5 });
    const done = await engine.wait(handle, { timeout: 20_000 });
    expect(done.status).toBe("done");
    expect(done.result).toEqual({ charged: 5 });
  });

  it("the untyped form checks against the target's machine when this engine has it, storing nothing", async () => {
    const { id } = await engine.insert(Checkout, { state: { order: 2 }, correlationKey: "order:2" });
    await eventually("parked", async () => (await engine.get(id))?.status === "awaiting");
    await expect(engine.signal("order:2", "payment_confirmed", { amount: "x" })).rejects.toThrow(
      /payload of signal "payment_confirmed" to Checkout is invalid/,
    );
    await expect(engine.signal({ id }, "other", {})).rejects.toThrow(ValidationError);
    const { rows } = await db.pool.query(`select count(*)::int as n from ${db.schema}.signals where instance_id = $1`, [
      id,
    ]);
    expect(rows[0].n).toBe(0);
    await engine.signal({ id }, "payment_confirmed", { amount: 7 });
    expect((await engine.wait(id, { timeout: 20_000 })).result).toEqual({ charged: 7 });
  });

  it("a typed signal to an instance of another machine is refused", async () => {
    const { id } = await engine.insert(Checkout, { state: { order: 3 } });
    await expect(engine.signal(Remote, { id }, "go", { n: 1 })).rejects.toThrow(
      /instance of "Checkout", not of "Remote"/,
    );
    await engine.cancel(id);
  });

  it("a signal to a finished instance of a machine it does not fit is refused, not reported finished", async () => {
    const { id } = await engine.insert(Checkout, { state: { order: 5 }, correlationKey: "order:5" });
    await engine.cancel(id);
    // Typed with another machine, by id and by correlation key (signal-batches.test.ts: in a batch).
    await expect(engine.signal(Remote, { id }, "go", { n: 1 })).rejects.toThrow(
      /instance of "Checkout", not of "Remote"/,
    );
    await expect(engine.signal(Remote, "order:5", "go", { n: 1 })).rejects.toThrow(
      /instance of "Checkout", not of "Remote"/,
    );
    // Untyped, with a payload Checkout refuses: the payload's error, as for a live instance.
    await expect(engine.signal({ id }, "payment_confirmed", { amount: "x" })).rejects.toThrow(
      /payload of signal "payment_confirmed" to Checkout is invalid/,
    );
    // One that fits is told the instance finished.
    const finished = engine.signal({ id }, "payment_confirmed", { amount: 1 });
    await expect(finished).rejects.toBeInstanceOf(InstanceTerminatedError);
    await expect(finished).rejects.toThrow(/instance \d+ is already cancelled/);
    const { rows } = await db.pool.query(`select count(*)::int as n from ${db.schema}.signals where instance_id = $1`, [
      id,
    ]);
    expect(rows[0].n).toBe(0);
  });

  it("a payload the sender could not check is checked when consumed: the step never sees it", async () => {
    const bad = await engine.insert(Remote, { state: {} });
    const good = await engine.insert(Remote, { state: {} });
    for (const id of [bad.id, good.id]) {
      await eventually("parked", async () => (await engine.get(id))?.status === "awaiting");
    }
    await engine.signal({ id: bad.id }, "go", { n: "not a number" });
    await engine.signal({ id: good.id }, "go", { n: 3 });
    const failed = await engine.wait(bad, { timeout: 20_000 });
    expect(failed.status).toBe("failed");
    expect(failed.error?.name).toBe("ValidationError");
    expect(failed.error?.message).toMatch(/payload of signal "go" to Remote is invalid/);
    expect((await engine.wait(good, { timeout: 20_000 })).result).toEqual({ n: 3 });
  });
});

describe("typed results and jobs", () => {
  it("a result its schema refuses fails the attempt; done is never committed", async () => {
    const handle = await engine.insert(Checkout, { state: { order: 4 }, correlationKey: "order:4", maxAttempts: 1 });
    await eventually("parked", async () => (await engine.get(handle))?.status === "awaiting");
    await engine.signal(Checkout, "order:4", "payment_confirmed", { amount: -1 });
    const failed = await engine.wait(handle, { timeout: 20_000 });
    expect(failed.status).toBe("failed");
    expect(failed.error?.message).toMatch(/result of step "paid" of machine "Checkout" is invalid/);
    expect(failed.result).toBeNull();
  });

  it("a job's returned value is checked by its result schema", async () => {
    expect((await engine.wait(await engine.insert(Typed, { args: { n: 2 } }), { timeout: 20_000 })).result).toBe(2);
    const failed = await engine.wait(await engine.insert(Typed, { args: { n: -1 } }), { timeout: 20_000 });
    expect(failed.status).toBe("failed");
    expect(failed.error?.message).toMatch(/result of step "perform" of machine "TypedResult" is invalid/);
  });

  it("a job without args is inserted with none, or with any JSON value", async () => {
    const none = await engine.insert(Tick);
    const some = await engine.insert(Tick, { args: [1, "two"] });
    expect((await engine.wait(none, { timeout: 20_000 })).result).toEqual({ got: null });
    expect((await engine.wait(some.id, { timeout: 20_000 })).result).toEqual({ got: [1, "two"] });
  });

  it("a handle's id is the plain id string", async () => {
    const handle = await engine.insert(Tick);
    expect(typeof handle.id).toBe("string");
    expect((await engine.get(handle.id))?.id).toBe(handle.id);
    expect((await engine.get(handle))?.id).toBe(handle.id);
  });
});
