// onFailure, NonRetryableError, retry.nonRetryable, ctx.maxAttempts and onCancel, against Postgres.
import { describe, expect, it } from "vitest";
import pg from "pg";
import { z } from "zod";
import { ConfigError, defineJob, defineMachine, GenDurable, NonRetryableError } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

class Declined extends Error {}
const seen: Array<Record<string, unknown>> = [];

const Transfer = defineMachine({
  name: "Transfer",
  queue: "routing",
  state: z.object({ mode: z.enum(["throw", "nonRetryable", "declined", "ok", "refundFails"]) }),
  backoff: { type: "fixed", delay: 0 },
  retry: { nonRetryable: [Declined] },
  steps: {
    start: {
      maxAttempts: 3,
      onFailure: "refund",
      run: (ctx) => {
        seen.push({ step: "start", attempt: ctx.attempt, maxAttempts: ctx.maxAttempts, failure: ctx.failure });
        if (ctx.state.mode === "nonRetryable") throw new NonRetryableError("account closed");
        if (ctx.state.mode === "declined") throw new Declined("card declined");
        if (ctx.state.mode === "ok") return ctx.done("sent");
        throw new Error(`bank down (attempt ${ctx.attempt})`);
      },
    },
    refund: {
      maxAttempts: 2,
      run: (ctx) => {
        seen.push({ step: "refund", attempt: ctx.attempt, failure: ctx.failure });
        if (ctx.state.mode === "refundFails") throw new Error("refund failed too");
        return ctx.done({ refunded: true, because: ctx.failure?.error.message });
      },
    },
  },
});

// The machine's onFailure is the default of every step; a failure after routing ends the instance failed.
const Pipeline = defineMachine({
  name: "Pipeline",
  queue: "routing",
  state: z.object({}),
  maxAttempts: 1,
  onFailure: "compensate",
  steps: {
    start: (ctx) => ctx.next("second"),
    second: () => {
      throw new Error("second broke");
    },
    compensate: (ctx) => ctx.next("after", {}),
    after: (ctx) => {
      seen.push({ step: "after", failure: ctx.failure });
      throw new Error("after broke");
    },
  },
});

const Flaky = defineJob({
  name: "Flaky",
  queue: "routing",
  args: z.object({}),
  maxAttempts: 5,
  retry: { nonRetryable: [TypeError] },
  perform: () => {
    throw new TypeError("bad input");
  },
});

const gates = new Map<string, () => void>();
const SubscriptionChild = defineMachine({
  name: "SubscriptionChild",
  queue: "routing",
  state: z.object({ key: z.string() }),
  onCancel: "cleanup",
  steps: {
    start: (ctx) => ctx.await("renew", "cleanup"),
    cleanup: (ctx) => {
      seen.push({ step: "cleanup", key: ctx.state.key, attempt: ctx.attempt, cancellation: ctx.cancellation });
      return ctx.done();
    },
  },
});
const Subscription = defineMachine({
  name: "Subscription",
  queue: "routing",
  state: z.object({
    key: z.string(),
    cleanupThrows: z.number().default(0),
    at: z.string().default("wait"),
    cleanupGate: z.boolean().default(false),
  }),
  onCancel: "cleanup",
  backoff: { type: "fixed", delay: 0 },
  steps: {
    start: async (ctx) => {
      if (ctx.state.at === "gate") {
        await new Promise<void>((resolve) => gates.set(ctx.state.key, resolve));
        return ctx.next("charged");
      }
      if (ctx.state.at === "delay") return ctx.next("charged", ctx.state, { delay: "1h" });
      if (ctx.state.at === "children")
        return ctx.spawn([{ machine: SubscriptionChild, state: { key: `${ctx.state.key}.child` } }], "charged");
      return ctx.await("renew", "charged");
    },
    charged: (ctx) => ctx.done("charged"),
    cleanup: {
      maxAttempts: 3,
      run: async (ctx) => {
        seen.push({ step: "cleanup", key: ctx.state.key, attempt: ctx.attempt, cancellation: ctx.cancellation });
        if (ctx.attempt <= ctx.state.cleanupThrows) throw new Error(`cleanup attempt ${ctx.attempt} failed`);
        if (ctx.state.cleanupGate && ctx.attempt === 1)
          await new Promise<void>((resolve) => gates.set(`${ctx.state.key}.cleanup`, resolve));
        return ctx.done("cleaned");
      },
    },
  },
});

const engine = db.engine({
  queues: { routing: 8 },
  machines: [Transfer, Pipeline, Flaky, Subscription, SubscriptionChild],
});
await engine.start();

const outcomes = async (id: string) => (await engine.history(id)).map((t) => `${t.outcome}:${t.toStep ?? ""}`);
const cleanups = (key: string) => seen.filter((s) => s.step === "cleanup" && s.key === key);

describe("onFailure", () => {
  it("after the last attempt, runs the onFailure step with ctx.failure instead of ending failed", async () => {
    seen.length = 0;
    const { id } = await engine.insert(Transfer, { state: { mode: "throw" } });
    const done = await engine.wait(id, { timeout: "20s" });
    expect(done.status).toBe("done");
    expect(done.result).toEqual({ refunded: true, because: "bank down (attempt 3)" });
    expect(seen.filter((s) => s.step === "start").map((s) => [s.attempt, s.maxAttempts])).toEqual([
      [1, 3],
      [2, 3],
      [3, 3],
    ]);
    const refund = seen.find((s) => s.step === "refund")!;
    expect(refund.failure).toEqual({
      error: expect.objectContaining({ name: "Error", message: "bank down (attempt 3)" }),
      step: "start",
      attempts: 3,
    });
    expect(await outcomes(id)).toEqual(["error:start", "error:start", "on_failure:refund", "done:"]);
  });

  it("a failure in the onFailure step itself ends the instance failed", async () => {
    seen.length = 0;
    const { id } = await engine.insert(Transfer, { state: { mode: "refundFails" } });
    const failed = await engine.wait(id, { timeout: "20s" });
    expect(failed.status).toBe("failed");
    expect(failed.error?.message).toBe("refund failed too");
    expect(seen.filter((s) => s.step === "refund")).toHaveLength(2);
  });

  it("the machine's onFailure routes once: a failure after routing ends the instance failed", async () => {
    seen.length = 0;
    const { id } = await engine.insert(Pipeline, { state: {} });
    const failed = await engine.wait(id, { timeout: "20s" });
    expect(failed.status).toBe("failed");
    expect(failed.error?.message).toBe("after broke");
    expect(seen).toEqual([{ step: "after", failure: expect.objectContaining({ step: "second", attempts: 1 }) }]);
    expect(await outcomes(id)).toEqual(["next:second", "on_failure:compensate", "next:after", "failed:"]);
  });
});

describe("errors that skip the retries", () => {
  it("NonRetryableError fails the step at its first attempt (and routes to onFailure)", async () => {
    seen.length = 0;
    const { id } = await engine.insert(Transfer, { state: { mode: "nonRetryable" } });
    expect((await engine.wait(id, { timeout: "20s" })).status).toBe("done");
    expect(seen.filter((s) => s.step === "start")).toHaveLength(1);
    expect(seen.find((s) => s.step === "refund")!.failure).toMatchObject({
      error: { name: "NonRetryableError", message: "account closed" },
      attempts: 1,
    });
  });

  it("an error class listed in retry.nonRetryable (machine or job) fails at once", async () => {
    seen.length = 0;
    const { id } = await engine.insert(Transfer, { state: { mode: "declined" } });
    expect((await engine.wait(id, { timeout: "20s" })).status).toBe("done");
    expect(seen.filter((s) => s.step === "start")).toHaveLength(1);
    const job = await engine.insert(Flaky, { args: {} });
    const failed = await engine.wait(job.id, { timeout: "20s" });
    expect(failed.status).toBe("failed");
    expect(failed.attempt).toBe(1);
    expect(failed.error?.name).toBe("TypeError");
  });

  it("refuses bad routing options with a clear error", () => {
    const state = z.object({});
    const bad = (definition: object) => () => defineMachine(definition as Parameters<typeof defineMachine>[0]);
    expect(bad({ name: "Bad", state, onFailure: "refnd", steps: { start: () => {}, refund: () => {} } })).toThrow(
      new ConfigError(
        'defineMachine("Bad"): onFailure names "refnd", which is not one of its steps (start, refund) (did you mean "refund"?)',
      ),
    );
    expect(bad({ name: "Bad", state, onCancel: 3, steps: { start: () => {} } })).toThrow(
      /onCancel names 3, which is not one of its steps/,
    );
    expect(bad({ name: "Bad", state, retry: { nonRetryable: ["TypeError"] }, steps: { start: () => {} } })).toThrow(
      /retry.nonRetryable must be an array of error classes/,
    );
  });
});

describe("onCancel", () => {
  it("cancel of a runnable instance runs the cleanup step once, then the instance ends cancelled", async () => {
    seen.length = 0;
    const cancelled: string[] = [];
    const off = engine.on("instance:cancelled", (e) => cancelled.push(e.id));
    const { id } = await engine.insert(Subscription, { state: { key: "delayed", at: "delay" } });
    await eventually("parked on its delay", async () => (await engine.get(id))?.step === "charged");
    await engine.cancel(id, "customer left");
    const end = await engine.wait(id, { timeout: "20s" });
    // Routed to its cleanup, the instance:cancelled comes from that step's commit, once its reply
    // is back: wait() can see the row cancelled (by the commit's notification) a moment before.
    await eventually("instance:cancelled", () => cancelled.includes(id));
    off();
    expect(end.status).toBe("cancelled");
    expect(end.error).toEqual({ name: "Cancelled", message: "customer left" });
    expect(end.result).toBeNull();
    expect(cleanups("delayed")).toEqual([
      { step: "cleanup", key: "delayed", attempt: 1, cancellation: { reason: "customer left" } },
    ]);
    expect(cancelled).toEqual([id]);
    expect(await outcomes(id)).toEqual(["next:charged", "cancelling:cleanup", "cancelled:"]);
  });

  it("cancel of an awaiting instance runs the cleanup; a second cancel while it cleans up changes nothing", async () => {
    seen.length = 0;
    const { id } = await engine.insert(Subscription, { state: { key: "awaiting", cleanupThrows: 1 } });
    await eventually("awaiting", async () => (await engine.get(id))?.status === "awaiting");
    await engine.cancel(id, "first");
    await engine.cancel(id, "second");
    const end = await engine.wait(id, { timeout: "20s" });
    expect(end.status).toBe("cancelled");
    expect(end.error?.message).toBe("first");
    // The cleanup failed once and ran again: at least once, until it returns.
    expect(cleanups("awaiting").map((s) => s.attempt)).toEqual([1, 2]);
  });

  it("a cleanup that fails every attempt still ends the instance cancelled, its error in the history", async () => {
    seen.length = 0;
    const { id } = await engine.insert(Subscription, { state: { key: "hopeless", cleanupThrows: 99 } });
    await eventually("awaiting", async () => (await engine.get(id))?.status === "awaiting");
    await engine.cancel(id);
    const end = await engine.wait(id, { timeout: "20s" });
    expect(end.status).toBe("cancelled");
    expect(end.error?.message).toBe("cancelled");
    expect(cleanups("hopeless")).toHaveLength(3);
    const last = (await engine.history(id)).at(-1)!;
    expect(last.outcome).toBe("cancelled");
    expect(last.error?.message).toBe("cleanup attempt 3 failed");
  });

  it("cancel of a running instance aborts its step, discards its outcome and runs the cleanup", async () => {
    seen.length = 0;
    const { id } = await engine.insert(Subscription, { state: { key: "running", at: "gate" } });
    await eventually("running", () => gates.has("running"));
    await engine.cancel(id, "stop");
    await eventually("cleaned up", () => cleanups("running").length === 1);
    gates.get("running")!();
    const end = await engine.wait(id, { timeout: "20s" });
    expect(end.status).toBe("cancelled");
    expect(end.step).toBe("cleanup");
    expect(await outcomes(id)).toEqual(["cancelling:cleanup", "cancelled:"]);
  });

  it("the cancel of a running step aborts that attempt only, not the cleanup claimed after its commit", async () => {
    seen.length = 0;
    const key = "reclaimed";
    // The cleanup of an instance routed to it is runnable at the cancel's commit, and the node that
    // cancels may claim it before engine.cancel goes on. The engine's clients hold the reply to
    // the cancel's commit until that node runs the cleanup (its other statements, and the node's
    // claims, go through untouched). Before, engine.cancel then aborted whatever its node held for
    // the instance: the cleanup, which failed once and ran again.
    let held = false;
    const holdOn = (client: pg.ClientBase) => {
      const query = client.query.bind(client) as (...args: unknown[]) => Promise<unknown>;
      let cancelling = false;
      (client as unknown as { query: unknown }).query = (...args: unknown[]) => {
        const first = args[0] as string | { text?: string } | undefined;
        const text = (typeof first === "string" ? first : first?.text)?.trim() ?? "";
        if (text.startsWith("-- cancel: the instance")) cancelling = true;
        const result = query(...args);
        if (!cancelling || held || text !== "commit") return result;
        held = true;
        return result.then(async (r) => {
          await eventually("the cleanup running", () => gates.has(`${key}.cleanup`));
          return r;
        });
      };
      return client;
    };
    const pool = new pg.Pool({ connectionString: db.url, max: 4 });
    pool.on("connect", holdOn);
    // A queue only this engine runs: the node that cancels is the one that claims the cleanup.
    const queues = { reclaim: 2, routing: 1 };
    const node = new GenDurable({ pool, schema: db.schema, queues, machines: [Subscription, SubscriptionChild] });
    try {
      await node.start();
      const { id } = await node.insert(Subscription, {
        state: { key, at: "gate", cleanupGate: true },
        queue: "reclaim",
      });
      await eventually("running", () => gates.has(key));
      await node.cancel(id, "stop");
      expect(held).toBe(true);
      gates.get(`${key}.cleanup`)!();
      gates.get(key)!();
      const end = await node.wait(id, { timeout: "20s" });
      expect(end.status).toBe("cancelled");
      expect(cleanups(key).map((s) => s.attempt)).toEqual([1]);
      expect(await outcomes(id)).toEqual(["cancelling:cleanup", "cancelled:"]);
    } finally {
      await node.stop();
      await pool.end();
    }
  });

  it("cancel of a parent runs the cleanup of the parent and of its children", async () => {
    seen.length = 0;
    const { id } = await engine.insert(Subscription, { state: { key: "parent", at: "children" } });
    await eventually("joining", async () => (await engine.get(id))?.status === "joining");
    const [child] = await engine
      .list({ machine: "SubscriptionChild", limit: 100 })
      .then((l) => l.filter((i) => i.parentId === id));
    await eventually("child awaiting", async () => (await engine.get(child!.id))?.status === "awaiting");
    await engine.cancel(id, "tree");
    expect((await engine.wait(id, { timeout: "20s" })).status).toBe("cancelled");
    expect((await engine.wait(child!.id, { timeout: "20s" })).status).toBe("cancelled");
    expect(cleanups("parent")).toHaveLength(1);
    expect(cleanups("parent.child")).toEqual([
      { step: "cleanup", key: "parent.child", attempt: 1, cancellation: { reason: "tree" } },
    ]);
  });
});
