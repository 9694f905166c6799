// Durations longer than Node's largest timer (2^31 - 1 ms, about 24.8 days): setTimeout
// fires those after 1 ms, so every timer whose delay comes from an option goes through
// setLongTimeout. A 30-day step timeout, shutdown grace or poll interval must mean 30 days.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { ConfigError, defineJob, defineMachine, GenDurable, type EngineEvents } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { recordStatements } from "../support/statements.js";

const db = await useTestDatabase(import.meta.url);

/** Resolves after `ms` by a real timer. Node runs due timers in order of their deadline,
 *  so once this fires, any timer that was set before it for fewer ms has fired too. */
const timerAfter = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

function gate() {
  let open!: () => void;
  const opened = new Promise<void>((resolve) => (open = resolve));
  return { open, opened };
}

describe("durations beyond 2^31 - 1 ms", () => {
  it('a step with timeout "30d" runs to its end: no StepTimeoutError after a millisecond', async () => {
    const Slow = defineJob({
      name: "SlowThirtyDays",
      queue: "long-timeout",
      args: z.object({}),
      timeout: "30d",
      maxAttempts: 1,
      perform: async (_args, ctx) => {
        // A 30 ms timer set after the step's 30-day timeout: with that timeout clamped
        // to 1 ms (the bug), it has fired and aborted the step before this one fires.
        await timerAfter(30);
        return { aborted: ctx.abortSignal.aborted };
      },
    });
    const engine = db.engine({ queues: { "long-timeout": 1 }, machines: [Slow] });
    const exceptions: Array<EngineEvents["step:exception"]> = [];
    engine.on("step:exception", (e) => exceptions.push(e));
    await engine.start();
    const { id } = await engine.insert(Slow, { args: {} });
    const done = await engine.wait(id, { timeout: "20s" });
    expect(exceptions).toEqual([]);
    expect(done).toMatchObject({ status: "done", result: { aborted: false }, error: null });
    expect((await engine.history(id)).map((t) => t.outcome)).toEqual(["done"]);
    await engine.stop();
  });

  it('shutdownGrace "30d": stop() waits for the running step to finish and commit', async () => {
    const release = gate();
    const started = gate();
    const aborted = gate();
    const Held = defineJob({
      name: "HeldThroughStop",
      queue: "long-grace",
      args: z.object({}),
      perform: async (_args, ctx) => {
        ctx.abortSignal.addEventListener("abort", () => aborted.open(), { once: true });
        started.open();
        await release.opened;
        return "finished";
      },
    });
    const engine = db.engine({ queues: { "long-grace": 1 }, machines: [Held], shutdownGrace: "30d" });
    const released: string[] = [];
    engine.on("step:released", (e) => released.push(e.id));
    await engine.start();
    const { id } = await engine.insert(Held, { args: {} });
    await started.opened;
    const stopping = engine.stop();
    // With the grace clamped to 1 ms, stop() aborts and releases the step at once. Give it
    // a bounded chance to do so (it is waiting on the step, not on this deadline).
    const abortedEarly = await Promise.race([aborted.opened.then(() => true), timerAfter(300).then(() => false)]);
    expect(abortedEarly).toBe(false);
    release.open();
    await stopping;
    expect(released).toEqual([]);
    const { rows } = await db.pool.query(`select status, result from ${db.schema}.instances where id = $1`, [id]);
    expect(rows[0]).toEqual({ status: "done", result: "finished" });
  });

  it('pollInterval "30d" does not spin the poll, timeouts and joins loops', async () => {
    const engine = db.engine({ queues: { "long-poll": 1 }, machines: [], pollInterval: "30d", reaperInterval: 20 });
    const ticks = new Map<string, number>();
    engine.on("loop:tick", (e) => ticks.set(e.loop, (ticks.get(e.loop) ?? 0) + 1));
    await engine.start();
    // One tick of every loop now: the next comes after the interval (30 days, jittered by 10%;
    // clamped to 1 ms, the bug, it comes at once and again and again).
    engine._testing().wake();
    const looped = ["poll", "timeouts", "joins"];
    await eventually("a tick of each loop", () => looped.every((loop) => (ticks.get(loop) ?? 0) >= 1));
    // The window: five more reaper ticks (20 ms apart).
    const reaped = ticks.get("reaper") ?? 0;
    await eventually("five more reaper ticks", () => (ticks.get("reaper") ?? 0) >= reaped + 5);
    await engine.stop();
    for (const loop of looped) expect(ticks.get(loop), loop).toBe(1);
  });

  it('pollInterval "30d": waitForEvent waits for the publication, not re-reading every millisecond', async () => {
    const Publisher = defineMachine({
      name: "PublishesOnSignal",
      queue: "long-publish",
      state: z.object({}),
      steps: {
        start: (ctx) => ctx.await("go", "publish"),
        publish: (ctx) => {
          ctx.publish("ready", "yes");
          return ctx.done();
        },
      },
    });
    const engine = db.engine({ queues: { "long-publish": 1 }, machines: [Publisher], pollInterval: "30d" });
    await engine.start();
    const { id } = await engine.insert(Publisher, { state: {} });
    await eventually("the instance awaiting its signal", async () => (await engine.get(id))?.status === "awaiting");
    const { pool } = engine._testing();
    const { texts, restore } = recordStatements(pool);
    const reads = () => texts.filter((t) => t.includes("published ? $2")).length;
    const published = engine.waitForEvent(id, "ready");
    // A window of 300 ms: the wait reads the instance once, arms its wake-up and sleeps (the bug:
    // a 30-day timer fired after 1 ms, and it read again and again).
    await timerAfter(300);
    const readsWhileWaiting = reads();
    await engine.signal({ id }, "go");
    expect(await published).toBe("yes");
    restore();
    await engine.stop();
    expect(readsWhileWaiting).toBeLessThanOrEqual(2);
  });

  it("leaseDuration and listenerHeartbeat are bounded by a ConfigError that names the limit", async () => {
    const make = (options: object) => () => new GenDurable({ connectionString: db.url, schema: db.schema, ...options });
    expect(make({ leaseDuration: "100d" })).toThrowError(ConfigError);
    expect(make({ leaseDuration: "100d" })).toThrowError(
      /leaseDuration must be at most 1 day \(86400000 ms\), got 8640000000 ms/,
    );
    expect(make({ listenerHeartbeat: "30d" })).toThrowError(
      /listenerHeartbeat must be at most 1 day \(86400000 ms\), got 2592000000 ms/,
    );
    // The largest allowed lease starts and stops (its lease connection's deadlines are the lease).
    const engine = db.engine({
      queues: { "long-lease": 1 },
      machines: [],
      leaseDuration: "1d",
      listenerHeartbeat: "1d",
    });
    await engine.start();
    await engine.stop();
  });
});
