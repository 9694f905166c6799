// Published values: committed with the step's outcome or not at all; waitForEvent wakes on NOTIFY.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  defineMachine,
  EventTimeoutError,
  InstanceTerminatedError,
  UnknownInstanceError,
  ValidationError,
} from "../../src/index.js";
import { runStep } from "../../src/testing/index.js";
import { cliInProcess } from "../support/cli.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

const Checkout = defineMachine({
  name: "Checkout",
  queue: "published",
  state: z.object({ order: z.string(), mode: z.string().default("ok") }),
  steps: {
    start: (ctx) => {
      if (ctx.state.mode === "tx") return ctx.next("transactional");
      ctx.publish("paymentUrl", `https://pay.example/${ctx.state.order}`);
      if (ctx.state.mode === "throw-once" && ctx.attempt === 1) {
        ctx.publish("leaked", true);
        throw new Error("the first attempt fails after publishing");
      }
      if (ctx.state.mode === "big") ctx.publish("big", "x".repeat(4000));
      if (ctx.state.mode === "not-json") ctx.publish("when", new Date(0) as never);
      return ctx.await("paid", "ship");
    },
    ship: (ctx) => {
      ctx.publish("status", "shipped");
      ctx.publish("paymentUrl", null);
      return ctx.done({ shipped: ctx.state.order });
    },
    transactional: {
      transactional: true,
      run: async (ctx) => {
        await ctx.client.query("select 1");
        ctx.publish("inTx", 1);
        return ctx.done();
      },
    },
  },
});

// A client engine (no queues, so no listener: it polls) and a worker; a small payload bound for the "big" case.
const worker = db.engine({ queues: { published: 4 }, machines: [Checkout], pollInterval: 50, maxPayloadBytes: 2048 });
const client = db.engine({ machines: [Checkout], pollInterval: 100 });
// Listens (it has a queue) but polls once a minute: what it sees within the tests' timeouts came by NOTIFY.
const listening = db.engine({ queues: { elsewhere: 1 }, machines: [], pollInterval: "60s" });
await worker.start();
await client.start();
await listening.start();

describe("published values", () => {
  it("waitForEvent resolves with a value published with an await, by id and by correlation key", async () => {
    const { id } = await client.insert(Checkout, { state: { order: "o1" }, correlationKey: "order:o1" });
    const url = await worker.waitForEvent(id, "paymentUrl", { timeout: 10_000 });
    expect(url).toBe("https://pay.example/o1");
    // Already published: at once, from any engine and by key.
    expect(await client.waitForEvent({ correlationKey: "order:o1" }, "paymentUrl", { timeout: 1 })).toBe(url);
    expect((await client.get(id))?.published).toEqual({ paymentUrl: url });

    await client.signal("order:o1", "paid");
    expect(await worker.waitForEvent({ id }, "status", { timeout: 10_000 })).toBe("shipped");
    const done = await client.wait(id, { timeout: 10_000 });
    // A later publication replaces the key; null is a value.
    expect(done.published).toEqual({ paymentUrl: null, status: "shipped" });
    expect(await client.waitForEvent(id, "paymentUrl")).toBeNull();
    const history = (await client.history(id)).map((t) => [t.fromStep, t.toStep, t.outcome, t.published]);
    expect(history).toEqual([
      ["start", "ship", "await", undefined],
      ["start", null, "published", { paymentUrl: url }],
      ["ship", "ship", "resumed", undefined],
      ["ship", null, "done", undefined],
      ["ship", null, "published", { status: "shipped", paymentUrl: null }],
    ]);
  });

  it("a waiter parked before the publication is woken by the commit", async () => {
    // Inserted with a delay, so the waiter is parked well before the step runs.
    const { id } = await client.insert(Checkout, { state: { order: "o2" }, delay: "300ms" });
    const waiting = worker.waitForEvent(id, "paymentUrl", { timeout: 10_000 });
    const polling = client.waitForEvent(id, "paymentUrl", { timeout: 10_000 });
    const notified = listening.waitForEvent(id, "paymentUrl", { timeout: 10_000 });
    expect(await notified).toBe("https://pay.example/o2");
    expect(await waiting).toBe("https://pay.example/o2");
    expect(await polling).toBe("https://pay.example/o2");
    await client.cancel(id);
  });

  it("a failed attempt publishes nothing; its retry does", async () => {
    const { id } = await client.insert(Checkout, { state: { order: "o3", mode: "throw-once" } });
    expect(await client.waitForEvent(id, "paymentUrl", { timeout: 10_000 })).toBe("https://pay.example/o3");
    expect((await client.get(id))?.published).toEqual({ paymentUrl: "https://pay.example/o3" });
    expect((await client.history(id)).map((t) => t.outcome)).toEqual(["error", "await", "published"]);
    await client.cancel(id);
  });

  it("a transactional step's publication commits in its transaction", async () => {
    const { id } = await client.insert(Checkout, { state: { order: "o4", mode: "tx" } });
    await worker.wait(id, { timeout: 10_000 });
    expect((await client.get(id))?.published).toEqual({ inTx: 1 });
  });

  it("bad values fail the attempt with a clear error; nothing is published", async () => {
    const big = await client.insert(Checkout, { state: { order: "o5", mode: "big" }, maxAttempts: 1 });
    const failed = await client.wait(big.id, { timeout: 10_000 });
    expect(failed.error?.name).toBe(ValidationError.name);
    expect(failed.error?.message).toMatch(/values published by .* over the limit of 2048 bytes/);
    expect(failed.published).toEqual({});
    const notJson = await client.insert(Checkout, { state: { order: "o6", mode: "not-json" }, maxAttempts: 1 });
    expect((await client.wait(notJson.id, { timeout: 10_000 })).error?.message).toMatch(/published as "when"/);
  });

  it("the accumulated values are bounded too: a commit that would exceed maxPayloadBytes is refused", async () => {
    const { id } = await client.insert(Checkout, { state: { order: "o7" }, maxAttempts: 1 });
    await eventually("awaiting", async () => (await client.get(id))?.status === "awaiting");
    await db.pool.query(`update ${db.schema}.instances set published = published || $2::jsonb where id = $1`, [
      id,
      JSON.stringify({ filler: "y".repeat(2000) }),
    ]);
    await client.signal({ id }, "paid");
    const failed = await client.wait(id, { timeout: 10_000 });
    expect(failed.error?.message).toMatch(/would exceed 2048 bytes of JSON in all/);
    expect(failed.published).not.toHaveProperty("status");
  });

  it("waitForEvent: timeout, a finished instance, an unknown one, bad input", async () => {
    const { id } = await client.insert(Checkout, { state: { order: "o8" } });
    await expect(client.waitForEvent(id, "never", { timeout: 150 })).rejects.toBeInstanceOf(EventTimeoutError);
    await client.cancel(id);
    await expect(client.waitForEvent(id, "never")).rejects.toBeInstanceOf(InstanceTerminatedError);
    await expect(client.waitForEvent("999999999", "x")).rejects.toBeInstanceOf(UnknownInstanceError);
    await expect(client.waitForEvent(id, "")).rejects.toThrow(/waitForEvent: event key must be a non-empty string/);
    await expect(client.waitForEvent(42 as never, "x")).rejects.toThrow(/expected an id, \{ id \} or/);
  });

  it("gen-durable show prints the published values and the history rows that published them", async () => {
    const { id } = await client.insert(Checkout, { state: { order: "o10" } });
    await client.waitForEvent(id, "paymentUrl", { timeout: 10_000 });
    const run = await cliInProcess(["show", id, "--schema", db.schema], { DATABASE_URL: db.url });
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain('published:\n  {\n    "paymentUrl": "https://pay.example/o10"\n  }');
    expect(run.stdout).toMatch(/ start +- +published .* published paymentUrl$/m);
    const json = await cliInProcess(["show", id, "--json", "--schema", db.schema], { DATABASE_URL: db.url });
    expect(JSON.parse(json.stdout).instance.published).toEqual({ paymentUrl: "https://pay.example/o10" });
    await client.cancel(id);
  });

  it("runStep reports what a step published", async () => {
    const result = await runStep(Checkout, "start", { state: { order: "o9" } });
    expect(result).toMatchObject({ type: "await", published: { paymentUrl: "https://pay.example/o9" } });
  });
});
