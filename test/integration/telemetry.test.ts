// Telemetry against real Postgres: engine events, OpenTelemetry spans and
// metrics (in-memory SDK exporters), the logger, and that none of it can break
// a step.
import { Writable } from "node:stream";
import { context, metrics, trace, SpanStatusCode, type Attributes } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { MeterProvider, MetricReader, type MetricData } from "@opentelemetry/sdk-metrics";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { pino } from "pino";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { ConfigError, defineJob, defineMachine, GenDurable, type EngineEvents, type Logger } from "../../src/index.js";
import { TypedEmitter } from "../../src/events.js";
import { OtelBridge } from "../../src/telemetry/otel.js";
import { QueueDepthSampler } from "../../src/telemetry/queue-depth.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const QUEUE = "telemetry";
const fast = { type: "fixed", delay: 10 } as const;
const empty = z.object({});

// ------------------------------------------------------------------ helpers

/** A metric reader the test collects on demand. */
class TestReader extends MetricReader {
  protected override async onShutdown(): Promise<void> {}
  protected override async onForceFlush(): Promise<void> {}
}

/** Fresh in-memory SDK providers: spans go to `exporter`, metrics are read by `collect()`. */
function sdk() {
  const exporter = new InMemorySpanExporter();
  const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
  const reader = new TestReader();
  const meterProvider = new MeterProvider({ readers: [reader] });
  return {
    exporter,
    tracerProvider,
    meterProvider,
    spans: (id?: string) =>
      exporter.getFinishedSpans().filter((s) => id === undefined || s.attributes["gen_durable.instance.id"] === id),
    async metric(name: string): Promise<MetricData | undefined> {
      const { resourceMetrics, errors } = await reader.collect();
      expect(errors).toEqual([]);
      return resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === name);
    },
  };
}

/** The data point of `metric` whose attributes include `match`. */
function point(
  metric: MetricData | undefined,
  match: Attributes,
): { value: unknown; attributes: Attributes } | undefined {
  const points = (metric?.dataPoints ?? []) as Array<{ value: unknown; attributes: Attributes }>;
  return points.find((p) => Object.entries(match).every(([k, v]) => p.attributes[k] === v));
}

/** An engine running QUEUE on this file's schema. */
function engineWith(options: Parameters<typeof db.engine>[0]) {
  return db.engine({ queues: { [QUEUE]: 4 }, ...options });
}

const toMs = ([s, ns]: [number, number]) => s * 1000 + ns / 1e6;

// ------------------------------------------------------------------ machines

const Flow = defineMachine({
  name: "Flow",
  queue: QUEUE,
  state: z.object({ n: z.number() }),
  steps: {
    start: (ctx) => ctx.next("finish", { n: ctx.state.n + 1 }),
    finish: async (ctx) => {
      await new Promise((resolve) => setTimeout(resolve, 20)); // a measurable duration
      return ctx.done({ n: ctx.state.n });
    },
  },
});

const Flaky = defineJob({
  name: "Flaky",
  queue: QUEUE,
  args: empty,
  backoff: fast,
  perform: (_args, ctx) => {
    if (ctx.attempt === 1) throw Object.assign(new Error("first attempt fails"), { code: "E_FLAKY" });
    return { attempt: ctx.attempt };
  },
});

const Doomed = defineJob({
  name: "Doomed",
  queue: QUEUE,
  args: empty,
  maxAttempts: 2,
  backoff: fast,
  perform: () => {
    throw new TypeError("never works");
  },
});

describe("events", () => {
  it("every step emits start and stop with its facts, duration and outcome; instances emit their end", async () => {
    const engine = engineWith({ machines: [Flow] });
    const seen: Array<[string, unknown]> = [];
    for (const name of ["step:start", "step:stop", "instance:done"] as const)
      engine.on(name, (e) => seen.push([name, e]));
    await engine.start();
    const { id } = await engine.insert(Flow, { state: { n: 1 } });
    await eventually("instance:done", () => seen.some(([name]) => name === "instance:done"));
    const mine = seen.filter(([, e]) => (e as { id: string }).id === id);
    expect(mine.map(([name, e]) => `${name} ${(e as { step?: string }).step ?? ""}`)).toEqual([
      "step:start start",
      "step:stop start",
      "step:start finish",
      "step:stop finish",
      "instance:done ",
    ]);
    const stops = mine.filter(([name]) => name === "step:stop").map(([, e]) => e as EngineEvents["step:stop"]);
    expect(stops[0]).toMatchObject({ id, machine: "Flow", step: "start", attempt: 1, queue: QUEUE, outcome: "next" });
    expect(stops[1]).toMatchObject({ id, machine: "Flow", step: "finish", attempt: 1, queue: QUEUE, outcome: "done" });
    expect(stops[1]!.durationMs).toBeGreaterThanOrEqual(15); // the step slept 20 ms
    expect(mine.at(-1)![1]).toEqual({ id, machine: "Flow", result: { n: 2 } });
    await engine.stop();
  });

  it("every background loop reports its ticks; the scheduler's count is the rows it claimed", async () => {
    const engine = engineWith({ machines: [Flow], reaperInterval: 50, leaseDuration: 1000 });
    const ticks: Array<EngineEvents["loop:tick"]> = [];
    engine.on("loop:tick", (e) => ticks.push(e));
    await engine.start();
    const { id } = await engine.insert(Flow, { state: { n: 1 } });
    await engine.wait(id, { timeout: 10_000 });
    const loops = ["scheduler", "poll", "reaper", "lease", "timeouts", "joins"] as const;
    await eventually(`a tick of each of ${loops.join(", ")}`, () =>
      loops.every((loop) => ticks.some((t) => t.loop === loop)),
    );
    const claims = ticks.filter((t) => t.loop === "scheduler");
    expect(claims.every((t) => t.queue === QUEUE && Number.isInteger(t.count) && t.durationMs >= 0)).toBe(true);
    // Two steps ran: the claims that found work add up to at least that (a step may be claimed twice only if retried).
    expect(claims.reduce((sum, t) => sum + t.count, 0)).toBeGreaterThanOrEqual(2);
    await engine.stop();
  });

  it("a failed attempt emits step:exception with the error and whether it will be retried", async () => {
    const engine = engineWith({ machines: [Doomed] });
    const exceptions: Array<EngineEvents["step:exception"]> = [];
    const failed: Array<EngineEvents["instance:failed"]> = [];
    engine.on("step:exception", (e) => exceptions.push(e));
    engine.on("instance:failed", (e) => failed.push(e));
    await engine.start();
    const { id } = await engine.insert(Doomed, { args: {} });
    await eventually("instance:failed", () => failed.some((e) => e.id === id));
    expect(
      exceptions.filter((e) => e.id === id).map((e) => [e.attempt, e.willRetry, e.error.name, e.error.message]),
    ).toEqual([
      [1, true, "TypeError", "never works"],
      [2, false, "TypeError", "never works"],
    ]);
    await engine.stop();
  });

  it("listeners that throw, synchronously or asynchronously, never break a step", async () => {
    const engine = engineWith({ machines: [Flow, Flaky] });
    for (const name of ["step:start", "step:stop", "step:exception", "instance:done", "loop:tick"] as const) {
      engine.on(name, () => {
        throw new Error(`listener of ${name} throws`);
      });
      // An async listener's rejection would be an unhandled rejection (vitest fails the run on one).
      engine.on(name, async () => {
        throw new Error(`async listener of ${name} rejects`);
      });
    }
    const stops: string[] = [];
    engine.on("step:stop", (e) => stops.push(`${e.step}:${e.outcome}`)); // a later listener still runs
    await engine.start();
    const flow = await engine.insert(Flow, { state: { n: 1 } });
    const flaky = await engine.insert(Flaky, { args: {} });
    expect(await engine.wait(flow.id, { timeout: 10_000 })).toMatchObject({ status: "done", result: { n: 2 } });
    expect(await engine.wait(flaky.id, { timeout: 10_000 })).toMatchObject({ status: "done", result: { attempt: 2 } });
    await eventually("the later listener saw the stops", () => stops.includes("finish:done"));
    await engine.stop();
  });
});

// ------------------------------------------------------------------ spans

describe("OpenTelemetry spans", () => {
  it("a span per step execution, named after machine and step, with its attributes and real start and end", async () => {
    const otel = sdk();
    const engine = engineWith({
      machines: [Flow],
      telemetry: { tracerProvider: otel.tracerProvider, meterProvider: otel.meterProvider },
    });
    await engine.start();
    const { id } = await engine.insert(Flow, { state: { n: 1 } });
    await engine.wait(id, { timeout: 10_000 });
    const spans = await eventually("two spans", () => (otel.spans(id).length === 2 ? otel.spans(id) : null)).catch(
      (error: unknown) => {
        throw new Error(
          `${String(error)}; spans: ${JSON.stringify(otel.spans(id).map((span) => [span.name, span.attributes]))}`,
        );
      },
    );
    const [start, finish] = [...spans].sort((a, b) => toMs(a.startTime) - toMs(b.startTime));
    expect(start!.name).toBe("gen-durable step Flow.start");
    expect(finish!.name).toBe("gen-durable step Flow.finish");
    expect(finish!.attributes).toEqual({
      "gen_durable.instance.id": id,
      "gen_durable.machine": "Flow",
      "gen_durable.step": "finish",
      "gen_durable.attempt": 1,
      "gen_durable.queue": QUEUE,
      "gen_durable.outcome": "done",
    });
    expect(start!.attributes["gen_durable.outcome"]).toBe("next");
    for (const span of spans) {
      expect(span.status.code).toBe(SpanStatusCode.UNSET);
      expect(span.instrumentationScope.name).toBe("gen-durable");
      expect(span.ended).toBe(true);
    }
    // The finish step slept 20 ms: its span covers it, and it starts after the first step's span ended.
    expect(toMs(finish!.duration)).toBeGreaterThanOrEqual(15);
    expect(toMs(finish!.startTime)).toBeGreaterThanOrEqual(toMs(start!.endTime) - 1);
    await engine.stop();
  });

  it("a failed attempt's span records the exception with status ERROR; the retry gets its own span", async () => {
    const otel = sdk();
    const engine = engineWith({ machines: [Flaky], telemetry: { tracerProvider: otel.tracerProvider } });
    await engine.start();
    const { id } = await engine.insert(Flaky, { args: {} });
    await engine.wait(id, { timeout: 10_000 });
    const spans = await eventually("two spans", () => (otel.spans(id).length === 2 ? otel.spans(id) : null)).catch(
      (error: unknown) => {
        throw new Error(
          `${String(error)}; spans: ${JSON.stringify(otel.spans(id).map((span) => [span.name, span.attributes]))}`,
        );
      },
    );
    const byAttempt = new Map(spans.map((s) => [s.attributes["gen_durable.attempt"], s]));
    const failed = byAttempt.get(1)!;
    expect(failed.name).toBe("gen-durable step Flaky.perform");
    expect(failed.status).toEqual({ code: SpanStatusCode.ERROR, message: "first attempt fails" });
    expect(failed.attributes).toMatchObject({
      "gen_durable.outcome": "error",
      "gen_durable.will_retry": true,
      "error.type": "E_FLAKY",
    });
    const exception = failed.events.find((e) => e.name === "exception");
    expect(exception?.attributes).toMatchObject({
      "exception.type": "E_FLAKY",
      "exception.message": "first attempt fails",
    });
    expect(String(exception?.attributes?.["exception.stacktrace"])).toContain("first attempt fails");
    const retried = byAttempt.get(2)!;
    expect(retried.status.code).toBe(SpanStatusCode.UNSET);
    expect(retried.attributes).toMatchObject({ "gen_durable.outcome": "done", "gen_durable.attempt": 2 });
    expect(retried.events).toEqual([]);
    await engine.stop();
  });

  it("the last attempt of a failing step ends with outcome failed", async () => {
    const otel = sdk();
    const engine = engineWith({ machines: [Doomed], telemetry: { tracerProvider: otel.tracerProvider } });
    await engine.start();
    const { id } = await engine.insert(Doomed, { args: {} });
    expect((await engine.wait(id, { timeout: 10_000 })).status).toBe("failed");
    const spans = await eventually("two spans", () => (otel.spans(id).length === 2 ? otel.spans(id) : null)).catch(
      (error: unknown) => {
        throw new Error(
          `${String(error)}; spans: ${JSON.stringify(otel.spans(id).map((span) => [span.name, span.attributes]))}`,
        );
      },
    );
    const last = spans.find((s) => s.attributes["gen_durable.attempt"] === 2)!;
    expect(last.attributes).toMatchObject({
      "gen_durable.outcome": "failed",
      "gen_durable.will_retry": false,
      "error.type": "TypeError",
    });
    expect(last.status.code).toBe(SpanStatusCode.ERROR);
    await engine.stop();
  });

  describe("with a context manager", () => {
    const manager = new AsyncLocalStorageContextManager();
    beforeAll(() => void context.setGlobalContextManager(manager.enable()));
    afterAll(() => context.disable());

    it("the step's span is active while its code runs: the step's own spans are its children", async () => {
      const otel = sdk();
      const app = otel.tracerProvider.getTracer("app");
      const seen: string[] = [];
      const Traced = defineMachine({
        name: "Traced",
        queue: QUEUE,
        state: empty,
        steps: {
          start: async (ctx) => {
            seen.push(trace.getActiveSpan()?.spanContext().spanId ?? "none");
            await app.startActiveSpan("charge card", async (span) => {
              await new Promise((resolve) => setTimeout(resolve, 5));
              span.end();
            });
            return ctx.done();
          },
        },
      });
      const engine = engineWith({ machines: [Traced], telemetry: { tracerProvider: otel.tracerProvider } });
      await engine.start();
      // Inserted inside an unrelated active span: the step's span must not become its child.
      const request = app.startSpan("http request");
      const { id } = await context.with(trace.setSpan(context.active(), request), () =>
        engine.insert(Traced, { state: {} }),
      );
      request.end();
      await engine.wait(id, { timeout: 10_000 });
      const step = await eventually("step span", () => otel.spans(id)[0]);
      const child = await eventually("child span", () =>
        otel.exporter.getFinishedSpans().find((s) => s.name === "charge card"),
      );
      expect(seen).toEqual([step.spanContext().spanId]);
      expect(child.parentSpanContext?.spanId).toBe(step.spanContext().spanId);
      expect(child.spanContext().traceId).toBe(step.spanContext().traceId);
      // Each step execution is the root of its own trace.
      expect(step.parentSpanContext).toBeUndefined();
      expect(step.spanContext().traceId).not.toBe(request.spanContext().traceId);
      await engine.stop();
    });

    it("a step's span is a root even when a span is active where the step starts", async () => {
      const otel = sdk();
      const events = new TypedEmitter();
      const bridge = new OtelBridge({
        events,
        tracerProvider: otel.tracerProvider,
        meterProvider: otel.meterProvider,
        depth: new QueueDepthSampler(db.pool, db.schema, 0, [], () => {}),
      });
      const facts = { id: "42", machine: "M", step: "s", attempt: 1, queue: QUEUE };
      const outer = otel.tracerProvider.getTracer("app").startSpan("unrelated");
      // Under a context manager an engine callback can inherit whatever context scheduled it: emit inside one.
      context.with(trace.setSpan(context.active(), outer), () => events.emit("step:start", facts));
      events.emit("step:stop", { ...facts, outcome: "done", durationMs: 1 });
      outer.end();
      const [span] = otel.spans("42");
      expect(span?.parentSpanContext).toBeUndefined();
      expect(span?.spanContext().traceId).not.toBe(outer.spanContext().traceId);
      expect(bridge.openSpans).toBe(0);
      bridge.close();
    });
  });

  it("a step whose lease was lost ends its span as lease_lost and counts it", async () => {
    const otel = sdk();
    let release: (() => void) | undefined;
    const Held = defineJob({
      name: "HeldForTelemetry",
      queue: QUEUE,
      args: empty,
      perform: () => new Promise<string>((resolve) => (release = () => resolve("late"))),
    });
    // A long lease: the step is not aborted, it finishes and its commit is fenced.
    const engine = engineWith({
      machines: [Held],
      leaseDuration: "60s",
      telemetry: { tracerProvider: otel.tracerProvider, meterProvider: otel.meterProvider },
    });
    const lost: string[] = [];
    engine.on("lease:lost", (e) => lost.push(e.id));
    await engine.start();
    const { id } = await engine.insert(Held, { args: {} });
    await eventually("step running", () => release);
    await db.pool.query(`update ${db.schema}.instances set claim_token = claim_token + 1 where id = $1`, [id]);
    release!();
    await eventually("lease:lost", () => lost.includes(id));
    const [span] = await eventually("span", () => (otel.spans(id).length > 0 ? otel.spans(id) : null));
    expect(span!.attributes["gen_durable.outcome"]).toBe("lease_lost");
    expect(span!.status.code).toBe(SpanStatusCode.ERROR);
    expect(
      point(await otel.metric("gen_durable.leases.lost"), { "gen_durable.machine": "HeldForTelemetry" })?.value,
    ).toBe(1);
    await engine.stop();
  });

  it("a step whose transaction lost its connection fails that attempt at once: its span ends in error, the retry succeeds", async () => {
    const otel = sdk();
    const Terminator = defineMachine({
      name: "Terminator",
      queue: QUEUE,
      state: empty,
      backoff: { type: "fixed", delay: 0 },
      steps: {
        start: {
          transactional: true,
          run: async (ctx) => {
            // The first attempt loses its connection mid-transaction; later ones succeed.
            if (ctx.attempt === 1) await ctx.client.query("select pg_terminate_backend(pg_backend_pid())");
            return ctx.done();
          },
        },
      },
    });
    const engine = engineWith({ machines: [Terminator], telemetry: { tracerProvider: otel.tracerProvider } });
    const exceptions: Array<EngineEvents["step:exception"]> = [];
    engine.on("step:exception", (e) => exceptions.push(e));
    await engine.start();
    const { id } = await engine.insert(Terminator, { state: {} });
    expect((await engine.wait(id, { timeout: 10_000 })).status).toBe("done");
    expect(exceptions).toMatchObject([{ id, step: "start", attempt: 1, willRetry: true }]);
    expect(exceptions[0]!.error.message).toMatch(/the connection broke under the step's transaction/);
    const spans = await eventually("two spans", () => (otel.spans(id).length === 2 ? otel.spans(id) : null));
    expect(spans.map((s) => s.status.code)).toEqual([SpanStatusCode.ERROR, SpanStatusCode.UNSET]);
    await engine.stop();
  });
});

describe("the event bridge, driven directly", () => {
  function bridged() {
    const otel = sdk();
    const events = new TypedEmitter();
    const depth = new QueueDepthSampler(db.pool, db.schema, 0, [], () => {});
    const bridge = new OtelBridge({
      events,
      tracerProvider: otel.tracerProvider,
      meterProvider: otel.meterProvider,
      depth,
    });
    return { otel, events, bridge };
  }
  const facts = { id: "77", machine: "M", step: "s", attempt: 3, queue: QUEUE };

  it("an attempt refused before running (no step:start) gets a span back-dated by its duration", () => {
    const { otel, events, bridge } = bridged();
    const error = { name: "Error", message: 'step "s" exhausted its 3 attempts' };
    const before = Date.now();
    events.emit("step:exception", { ...facts, error, durationMs: 2000, willRetry: false });
    events.emit("step:stop", { ...facts, outcome: "failed", durationMs: 2000 });
    const [span] = otel.spans("77");
    expect(span?.attributes).toMatchObject({
      "gen_durable.outcome": "failed",
      "gen_durable.will_retry": false,
      "gen_durable.attempt": 3,
    });
    expect(toMs(span!.startTime)).toBeLessThanOrEqual(before - 1900);
    expect(span!.status.code).toBe(SpanStatusCode.ERROR);
    expect(bridge.openSpans).toBe(0);
    bridge.close();
  });

  it("close() ends the spans still open as abandoned and unsubscribes", () => {
    const { otel, events, bridge } = bridged();
    events.emit("step:start", facts);
    expect(bridge.openSpans).toBe(1);
    bridge.close();
    expect(otel.spans("77").map((s) => s.attributes["gen_durable.outcome"])).toEqual(["abandoned"]);
    events.emit("step:start", { ...facts, id: "78" });
    expect(bridge.openSpans).toBe(0);
  });

  it("counts steps postponed by their rate limit", async () => {
    const { otel, events, bridge } = bridged();
    events.emit("step:rate_limited", { ...facts, limit: "stripe", waitMs: 100 });
    events.emit("step:rate_limited", { ...facts, limit: "stripe", waitMs: 50 });
    const limited = await otel.metric("gen_durable.steps.rate_limited");
    expect(
      point(limited, { "gen_durable.machine": "M", "gen_durable.rate_limit": "stripe", "gen_durable.queue": QUEUE })
        ?.value,
    ).toBe(2);
    bridge.close();
  });
});

// ------------------------------------------------------------------ metrics

describe("OpenTelemetry metrics", () => {
  it("records step durations, steps started and instances finished, per machine, step and outcome", async () => {
    const otel = sdk();
    const engine = engineWith({ machines: [Flow, Flaky, Doomed], telemetry: { meterProvider: otel.meterProvider } });
    const done: string[] = [];
    for (const name of ["instance:done", "instance:failed"] as const) engine.on(name, (e) => done.push(e.id));
    await engine.start();
    const ids = [
      (await engine.insert(Flow, { state: { n: 1 } })).id,
      (await engine.insert(Flaky, { args: {} })).id,
      (await engine.insert(Doomed, { args: {} })).id,
    ];
    await eventually("all three finished", () => ids.every((id) => done.includes(id)));

    const duration = await otel.metric("gen_durable.step.duration");
    expect(duration?.descriptor.unit).toBe("ms");
    const hist = (match: Attributes) => point(duration, match)?.value as { count: number; sum: number } | undefined;
    expect(
      hist({ "gen_durable.machine": "Flow", "gen_durable.step": "start", "gen_durable.outcome": "next" })?.count,
    ).toBe(1);
    expect(
      hist({ "gen_durable.machine": "Flow", "gen_durable.step": "finish", "gen_durable.outcome": "done" })?.sum,
    ).toBeGreaterThanOrEqual(15);
    expect(hist({ "gen_durable.machine": "Flaky", "gen_durable.outcome": "error" })?.count).toBe(1);
    expect(hist({ "gen_durable.machine": "Flaky", "gen_durable.outcome": "done" })?.count).toBe(1);
    expect(hist({ "gen_durable.machine": "Doomed", "gen_durable.outcome": "failed" })?.count).toBe(1);

    const started = await otel.metric("gen_durable.steps.started");
    expect(
      point(started, { "gen_durable.machine": "Flow", "gen_durable.step": "finish", "gen_durable.queue": QUEUE })
        ?.value,
    ).toBe(1);
    expect(point(started, { "gen_durable.machine": "Doomed", "gen_durable.step": "perform" })?.value).toBe(2);

    const finished = await otel.metric("gen_durable.instances.finished");
    expect(point(finished, { "gen_durable.machine": "Flow", "gen_durable.status": "done" })?.value).toBe(1);
    expect(point(finished, { "gen_durable.machine": "Doomed", "gen_durable.status": "failed" })?.value).toBe(1);
    await engine.stop();
  });

  it("reports queue depth per queue and status from the database, with 0 for this node's empty queues", async () => {
    const otel = sdk();
    const Waiter = defineMachine({
      name: "Waiter",
      queue: QUEUE,
      state: empty,
      steps: { start: (ctx) => ctx.await("go", "end"), end: (ctx) => ctx.done() },
    });
    const engine = engineWith({
      machines: [Waiter, Flow],
      telemetry: { meterProvider: otel.meterProvider, queueDepthInterval: 0 },
    });
    await engine.start();
    // Nothing runs queue "depth_parked": those stay runnable.
    await engine.insert(Flow, { state: { n: 1 }, queue: "depth_parked" });
    await engine.insert(Flow, { state: { n: 2 }, queue: "depth_parked" });
    const { id } = await engine.insert(Waiter, { state: {} });
    await eventually("awaiting", async () => (await engine.get(id))?.status === "awaiting");

    const depth = await otel.metric("gen_durable.queue.depth");
    expect(depth?.descriptor.unit).toBe("{instance}");
    const at = (queue: string, status: string) =>
      point(depth, { "gen_durable.queue": queue, "gen_durable.status": status })?.value;
    expect(at("depth_parked", "runnable")).toBe(2);
    expect(at(QUEUE, "awaiting")).toBeGreaterThanOrEqual(1);
    expect(at(QUEUE, "joining")).toBe(0); // reported although empty: this node runs the queue
    expect(at("depth_parked", "running")).toBeUndefined(); // not this node's queue, and nothing there

    await engine.signal({ id }, "go");
    await engine.wait(id, { timeout: 10_000 });
    await engine.insert(Flow, { state: { n: 3 }, queue: "depth_parked" });
    const later = await otel.metric("gen_durable.queue.depth");
    expect(point(later, { "gen_durable.queue": "depth_parked", "gen_durable.status": "runnable" })?.value).toBe(3);
    await engine.stop();
  });

  it("samples queue depth at most once per queueDepthInterval", async () => {
    const otel = sdk();
    const engine = engineWith({
      machines: [Flow],
      telemetry: { meterProvider: otel.meterProvider, queueDepthInterval: "1h" },
    });
    await engine.start();
    await engine.insert(Flow, { state: { n: 1 }, queue: "depth_cached" });
    const first = await otel.metric("gen_durable.queue.depth");
    expect(point(first, { "gen_durable.queue": "depth_cached", "gen_durable.status": "runnable" })?.value).toBe(1);
    await engine.insert(Flow, { state: { n: 2 }, queue: "depth_cached" });
    const second = await otel.metric("gen_durable.queue.depth");
    // Within the hour: the cached figure, no second query.
    expect(point(second, { "gen_durable.queue": "depth_cached", "gen_durable.status": "runnable" })?.value).toBe(1);
    await engine.stop();
  });

  it("a failing depth query is reported and observes nothing", async () => {
    const errors: unknown[] = [];
    const sampler = new QueueDepthSampler(db.pool, "no_such_schema", 0, [QUEUE], (e) => errors.push(e));
    expect(await sampler.read()).toEqual([]);
    expect(String(errors[0])).toMatch(/relation "no_such_schema.instances" does not exist/);
    // The same sampler on the real schema works and fills in this node's queues.
    const ok = new QueueDepthSampler(db.pool, db.schema, 0, ["empty_q"], (e) => errors.push(e));
    expect(await ok.read()).toEqual(expect.arrayContaining([{ queue: "empty_q", status: "joining", count: 0 }]));
    expect(errors).toHaveLength(1);
  });

  it("stop() removes the depth callback: a stopped engine queries nothing", async () => {
    const otel = sdk();
    const engine = engineWith({
      machines: [Flow],
      telemetry: { meterProvider: otel.meterProvider, queueDepthInterval: 0 },
    });
    const errors: Array<EngineEvents["engine:error"]> = [];
    engine.on("engine:error", (e) => errors.push(e));
    await engine.start();
    expect(await otel.metric("gen_durable.queue.depth")).toBeDefined();
    await engine.stop();
    // stop() ended the engine's pool: a sample now would fail and be reported as engine:error "telemetry".
    await otel.metric("gen_durable.queue.depth");
    expect(errors).toEqual([]);
  });
});

// ------------------------------------------------------------------ global providers, none, off

describe("global providers", () => {
  afterAll(() => {
    trace.disable();
    metrics.disable();
  });

  it("with no SDK registered nothing is exported and nothing fails", async () => {
    trace.disable();
    metrics.disable();
    const otel = sdk(); // an SDK that exists but is not registered anywhere
    const engine = engineWith({ machines: [Flow, Flaky] });
    const errors: unknown[] = [];
    engine.on("engine:error", (e) => errors.push(e.error));
    await engine.start();
    const a = await engine.insert(Flow, { state: { n: 1 } });
    const b = await engine.insert(Flaky, { args: {} });
    expect((await engine.wait(a.id, { timeout: 10_000 })).status).toBe("done");
    expect((await engine.wait(b.id, { timeout: 10_000 })).status).toBe("done");
    expect(otel.exporter.getFinishedSpans()).toEqual([]);
    expect(await otel.metric("gen_durable.step.duration")).toBeUndefined();
    expect(errors).toEqual([]);
    await engine.stop();
  });

  it("uses the global providers registered before start()", async () => {
    const otel = sdk();
    const engine = engineWith({ machines: [Flow] });
    // Registered after construction, before start: still used (the meter is taken in start()).
    trace.setGlobalTracerProvider(otel.tracerProvider);
    metrics.setGlobalMeterProvider(otel.meterProvider);
    await engine.start();
    const { id } = await engine.insert(Flow, { state: { n: 1 } });
    await engine.wait(id, { timeout: 10_000 });
    await eventually("spans through the global provider", () => otel.spans(id).length === 2);
    expect(
      point(await otel.metric("gen_durable.steps.started"), {
        "gen_durable.machine": "Flow",
        "gen_durable.step": "start",
      })?.value,
    ).toBe(1);
    await engine.stop();
    trace.disable();
    metrics.disable();
  });

  it("a tracer registered after start() traces the steps that start after it", async () => {
    trace.disable();
    metrics.disable();
    const otel = sdk();
    const engine = engineWith({ machines: [Flow] });
    await engine.start();
    const before = await engine.insert(Flow, { state: { n: 1 } });
    await engine.wait(before.id, { timeout: 10_000 });
    // Steps that ran with nothing registered made no span (not even a no-op one kept open).
    trace.setGlobalTracerProvider(otel.tracerProvider);
    const after = await engine.insert(Flow, { state: { n: 2 } });
    await engine.wait(after.id, { timeout: 10_000 });
    await eventually("spans of the instance started after the registration", () => otel.spans(after.id).length === 2);
    expect(otel.spans(before.id)).toEqual([]);
    // The meter is the one the engine took at start(): the API's no-op one.
    expect(await otel.metric("gen_durable.step.duration")).toBeUndefined();
    await engine.stop();
    trace.disable();
  });

  it("a step running when a tracer is registered makes no span: it started before the registration", async () => {
    trace.disable();
    metrics.disable();
    const otel = sdk();
    let release: (() => void) | undefined;
    const Straddles = defineJob({
      name: "StraddlesRegistration",
      queue: QUEUE,
      args: empty,
      perform: () => new Promise<string>((resolve) => (release = () => resolve("after"))),
    });
    const engine = engineWith({ machines: [Straddles, Flow] });
    const stopped: string[] = [];
    engine.on("step:stop", (e) => stopped.push(e.id));
    await engine.start();
    const straddling = await engine.insert(Straddles, { args: {} });
    await eventually("step running", () => release);
    trace.setGlobalTracerProvider(otel.tracerProvider);
    release!();
    await eventually("its step:stop", () => stopped.includes(straddling.id));
    const after = await engine.insert(Flow, { state: { n: 1 } });
    await engine.wait(after.id, { timeout: 10_000 });
    await eventually("spans of the instance started after the registration", () => otel.spans(after.id).length === 2);
    expect(otel.spans(straddling.id)).toEqual([]);
    await engine.stop();
    trace.disable();
  });

  it("telemetry: false exports nothing even with global providers registered", async () => {
    const otel = sdk();
    trace.setGlobalTracerProvider(otel.tracerProvider);
    metrics.setGlobalMeterProvider(otel.meterProvider);
    const engine = engineWith({ machines: [Flow], telemetry: false });
    await engine.start();
    const { id } = await engine.insert(Flow, { state: { n: 1 } });
    expect((await engine.wait(id, { timeout: 10_000 })).status).toBe("done");
    expect(otel.exporter.getFinishedSpans()).toEqual([]);
    expect(await otel.metric("gen_durable.queue.depth")).toBeUndefined();
    await engine.stop();
    trace.disable();
    metrics.disable();
  });
});

describe("the telemetry option", () => {
  const make = (telemetry: unknown) => () =>
    new GenDurable({ connectionString: db.url, schema: db.schema, telemetry: telemetry as never });

  it("rejects what is not an options object or false", () => {
    expect(make(true)).toThrow(ConfigError);
    expect(make(true)).toThrow(
      /telemetry must be \{ tracerProvider\?, meterProvider\?, queueDepthInterval\? \} or false, got true/,
    );
    expect(make([])).toThrow(/telemetry must be .* got an array/);
  });

  it("names an unknown key and suggests the right one", () => {
    expect(make({ tracerprovider: {} })).toThrow(
      /GenDurable: telemetry: unknown option "tracerprovider" \(did you mean "tracerProvider"\?\)/,
    );
  });

  it("rejects providers that are not providers, and bad intervals", () => {
    expect(make({ tracerProvider: {} })).toThrow(
      /telemetry.tracerProvider must be an OpenTelemetry TracerProvider \(with getTracer\(\)\), got an object/,
    );
    expect(make({ meterProvider: new BasicTracerProvider() })).toThrow(
      /telemetry.meterProvider must be an OpenTelemetry MeterProvider \(with getMeter\(\)\), got a BasicTracerProvider/,
    );
    expect(make({ queueDepthInterval: "soon" })).toThrow(
      /telemetry.queueDepthInterval must be a duration .* got "soon"/,
    );
    expect(make({ queueDepthInterval: -1 })).toThrow(/telemetry.queueDepthInterval must be a duration/);
  });
});

// ------------------------------------------------------------------ logger

interface Line {
  level: string;
  fields: Record<string, unknown>;
  message: string | undefined;
  bindings: Record<string, unknown>;
}

/** A pino-like logger that records every call, with the bindings of the child it was called on. */
function fakePino(withChild = true): { logger: Logger; lines: Line[]; children: Array<Record<string, unknown>> } {
  const lines: Line[] = [];
  const children: Array<Record<string, unknown>> = [];
  const make = (bindings: Record<string, unknown>): Logger => {
    const at = (level: string) => (fields: object, message?: string) =>
      void lines.push({ level, fields: { ...fields }, message, bindings });
    const logger: Logger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
    if (withChild) {
      logger.child = (more) => {
        children.push(more);
        return make({ ...bindings, ...more });
      };
    }
    return logger;
  };
  return { logger: make({}), lines, children };
}

const Chatty = defineMachine({
  name: "Chatty",
  queue: QUEUE,
  state: z.object({ fail: z.boolean() }),
  maxAttempts: 1,
  steps: {
    start: (ctx) => {
      ctx.log.info("charging", { amount: 5 });
      ctx.log.warn("careful");
      if (ctx.state.fail) throw new Error("card declined");
      return ctx.done();
    },
  },
});

describe("logger", () => {
  it("ctx.log is a child bound to the instance; engine lines cover step starts, stops, failures", async () => {
    const { logger, lines, children } = fakePino();
    const engine = engineWith({ machines: [Chatty], logger });
    await engine.start();
    const ok = await engine.insert(Chatty, { state: { fail: false } });
    const bad = await engine.insert(Chatty, { state: { fail: true } });
    await engine.wait(ok.id, { timeout: 10_000 });
    await engine.wait(bad.id, { timeout: 10_000 });
    // Event-driven lines can come a moment after wait() sees the rows finished.
    await eventually("the failure logged", () => lines.some((l) => l.level === "error" && l.fields.id === bad.id));
    await eventually("the success logged", () =>
      lines.some((l) => l.message === "step Chatty.start committed: done" && l.fields.id === ok.id),
    );

    const bound = { id: ok.id, machine: "Chatty", step: "start", attempt: 1 };
    expect(children).toContainEqual(bound);
    expect(lines).toContainEqual({ level: "info", fields: { amount: 5 }, message: "charging", bindings: bound });
    expect(lines).toContainEqual({ level: "warn", fields: {}, message: "careful", bindings: bound });

    const about = (id: string) => lines.filter((l) => l.bindings.id === undefined && l.fields.id === id);
    expect(about(ok.id).map((l) => `${l.level} ${l.message}`)).toEqual([
      "debug step Chatty.start started (attempt 1)",
      "debug step Chatty.start committed: done",
    ]);
    const failure = about(bad.id);
    expect(failure.map((l) => `${l.level} ${l.message}`)).toEqual([
      "debug step Chatty.start started (attempt 1)",
      "warn step Chatty.start failed attempt 1: card declined; no attempts left",
      "debug step Chatty.start committed: failed",
      `error instance ${bad.id} of Chatty failed: card declined`,
    ]);
    expect(failure[1]!.fields.err).toMatchObject({ name: "Error", message: "card declined" });
    await engine.stop();
  });

  it("without child(), ctx.log merges the instance facts into each line", async () => {
    const { logger, lines } = fakePino(false);
    const engine = engineWith({ machines: [Chatty], logger });
    await engine.start();
    const { id } = await engine.insert(Chatty, { state: { fail: false } });
    await engine.wait(id, { timeout: 10_000 });
    expect(lines).toContainEqual({
      level: "info",
      fields: { id, machine: "Chatty", step: "start", attempt: 1, amount: 5 },
      message: "charging",
      bindings: {},
    });
    await engine.stop();
  });

  it("a logger that throws loses lines, never steps", async () => {
    const throwing: Logger = {
      debug: () => {
        throw new Error("disk full");
      },
      info: () => {
        throw new Error("disk full");
      },
      warn: () => {
        throw new Error("disk full");
      },
      error: () => {
        throw new Error("disk full");
      },
      child: () => {
        throw new Error("no children");
      },
    };
    const engine = engineWith({ machines: [Chatty], logger: throwing });
    await engine.start();
    const { id } = await engine.insert(Chatty, { state: { fail: false } });
    expect((await engine.wait(id, { timeout: 10_000 })).status).toBe("done");
    await engine.stop();
  });

  it("works with real pino: JSON lines carry the instance bindings", async () => {
    const chunks: string[] = [];
    const stream = new Writable({
      write(chunk, _encoding, callback) {
        chunks.push(String(chunk));
        callback();
      },
    });
    const engine = engineWith({ machines: [Chatty], logger: pino({ level: "debug" }, stream) });
    await engine.start();
    const { id } = await engine.insert(Chatty, { state: { fail: false } });
    await engine.wait(id, { timeout: 10_000 });
    const records = () =>
      chunks
        .join("")
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>);
    const charging = await eventually("the step's line", () => records().find((r) => r.msg === "charging"));
    expect(charging).toMatchObject({ level: 30, id, machine: "Chatty", step: "start", attempt: 1, amount: 5 });
    // step:stop can come a moment after wait() sees the row done: wait for its line too.
    const committed = await eventually("the engine's commit line", () =>
      records().find((r) => r.msg === "step Chatty.start committed: done"),
    );
    expect(committed).toMatchObject({ level: 20, id, outcome: "done" });
    await engine.stop();
  });

  it("rejects a logger that is not pino-style, naming what is missing", () => {
    const make = (logger: unknown) => () =>
      new GenDurable({ connectionString: db.url, schema: db.schema, logger: logger as never });
    expect(make(console.log)).toThrow(
      /logger must be a pino-style logger with debug, info, warn and error methods, got a function/,
    );
    expect(make({ debug() {}, info() {}, warn() {} })).toThrow(
      /GenDurable: logger must have debug, info, warn and error methods \(pino-style\); error is undefined/,
    );
    expect(make({ debug() {}, info() {}, warn() {}, error() {}, child: "yes" })).toThrow(
      /logger.child must be a function \(pino-style\) or absent, got "yes"/,
    );
  });
});
