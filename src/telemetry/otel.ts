/**
 * OpenTelemetry spans and metrics, through `@opentelemetry/api` only: without
 * an SDK every call below would land on the API's no-op implementations, and
 * an application that registers nothing exports nothing; steps then skip
 * their spans and metrics altogether (see `metering` and `tracing`).
 *
 * Everything is driven by the engine's own events (src/events.ts), so the
 * executor knows nothing of OpenTelemetry. A step's span opens on
 * `step:start` and ends on the event that settles the attempt: `step:stop`
 * (after its outcome committed, a failed attempt's included),
 * `lease:lost` (the outcome was discarded) or `engine:error` carrying the
 * step (the commit itself failed). A failed attempt emits `step:exception`
 * (the error is recorded on the span) and then `step:stop` with outcome
 * `error` or `failed` once that is committed. The executor's one hook, `around`, runs
 * the step's code with its span active, so spans the step's own code opens
 * (HTTP calls, queries) are children of it.
 *
 * Each step execution is the root of its own trace (`root: true`): whatever
 * context happened to be active where the claim began (say, a request that
 * inserted the instance on this node) is unrelated to the step. What caused the
 * step is told by links instead (telemetry/propagation.ts): to the context
 * active where its instance was inserted (the producer's request, or the
 * parent's step for a spawned child) and to the contexts of the signals that
 * resumed it, added when its code starts.
 */
import {
  ProxyTracerProvider,
  ROOT_CONTEXT,
  SpanKind,
  SpanStatusCode,
  ValueType,
  context,
  createNoopMeter,
  trace,
  type Attributes,
  type BatchObservableCallback,
  type Counter,
  type Histogram,
  type Meter,
  type MeterProvider,
  type ObservableCallback,
  type ObservableGauge,
  type Span,
  type Tracer,
  type TracerProvider,
} from "@opentelemetry/api";
import type { EngineEvents, TypedEmitter } from "../events.js";
import type { ErrorRecord } from "../json.js";
import { linksTo } from "./propagation.js";
import type { QueueDepthSampler } from "./queue-depth.js";
import type { TableHealthSampler } from "./table-health.js";

/** Instrumentation scope of the tracer and the meter. */
export const SCOPE = "gen-durable";

/** Attribute keys on spans and metric points. */
export const ATTR = {
  instanceId: "gen_durable.instance.id",
  machine: "gen_durable.machine",
  step: "gen_durable.step",
  attempt: "gen_durable.attempt",
  queue: "gen_durable.queue",
  outcome: "gen_durable.outcome",
  willRetry: "gen_durable.will_retry",
  rateLimit: "gen_durable.rate_limit",
  status: "gen_durable.status",
  table: "gen_durable.table",
  errorType: "error.type",
} as const;

/** Metric names. */
export const METRIC = {
  stepDuration: "gen_durable.step.duration",
  stepsStarted: "gen_durable.steps.started",
  leasesLost: "gen_durable.leases.lost",
  stepsRateLimited: "gen_durable.steps.rate_limited",
  instancesFinished: "gen_durable.instances.finished",
  queueDepth: "gen_durable.queue.depth",
  tableDeadTuples: "gen_durable.table.dead_tuples",
  tableLiveTuples: "gen_durable.table.live_tuples",
  tableVacuumAge: "gen_durable.table.vacuum_age",
} as const;

type StepFacts = EngineEvents["step:start"];

/** What `around` gets of a claimed row: the attempt, and the trace contexts its span links to. */
export interface StepTraceFacts {
  id: string;
  attempt: number;
  /** Stored where the instance was inserted or spawned. */
  trace_context?: unknown;
  /** Set for a spawned child: its trace context is its parent's step. */
  parent_id?: string | null;
  /** The signals that resumed it, each with its sender's trace context when one was active. */
  awaited?: ReadonlyArray<{ traceContext?: unknown }> | null;
}

interface OpenSpan {
  span: Span;
  /** performance.now() at step:start, for a lease-lost step's duration. */
  startedAt: number;
  /** step:exception was seen: the span holds the error already. */
  failed: boolean;
}

export interface OtelDeps {
  events: TypedEmitter;
  tracerProvider: TracerProvider;
  meterProvider: MeterProvider;
  depth: QueueDepthSampler;
  /** Source of the table gauges; without it they observe nothing. */
  tables?: TableHealthSampler;
}

/** What the API's global tracer provider delegates to while no SDK is registered. */
const NO_SDK_TRACER_PROVIDER = new ProxyTracerProvider().getDelegate();
const NOOP_METER_PROTOTYPE = Object.getPrototypeOf(createNoopMeter()) as object;

/** Wires spans and metrics to the engine's events; `close()` undoes it. */
export class OtelBridge {
  private readonly tracer: Tracer;
  private readonly meter: Meter;
  /**
   * Whether spans and metric points can go anywhere. Without an SDK every span and metric call is
   * a no-op, but making the spans, their attributes and the context the step runs in cost about a
   * tenth of a no-op job's CPU in Node; so while nothing is registered, steps skip them. Metrics go
   * nowhere for good when the meter is the API's no-op one (taken when the engine started); spans,
   * while the global tracer provider delegates to nothing: asked per step, since that provider is
   * a proxy and an SDK registered after start() is used from the next step on.
   */
  private readonly metering: boolean;
  private readonly tracing: () => boolean;
  /** Spans of attempts in flight on this node, by `id:attempt`. */
  private readonly open = new Map<string, OpenSpan>();
  private readonly offs: Array<() => void> = [];
  private readonly stepDuration: Histogram;
  private readonly stepsStarted: Counter;
  private readonly leasesLost: Counter;
  private readonly stepsRateLimited: Counter;
  private readonly instancesFinished: Counter;
  private readonly queueDepth: ObservableGauge;
  private readonly observeDepth: ObservableCallback;
  private readonly tableGauges: ObservableGauge[];
  private readonly observeTables: BatchObservableCallback;

  constructor(deps: OtelDeps) {
    this.tracer = deps.tracerProvider.getTracer(SCOPE);
    this.meter = deps.meterProvider.getMeter(SCOPE);
    this.metering = Object.getPrototypeOf(this.meter) !== NOOP_METER_PROTOTYPE;
    const provider = deps.tracerProvider;
    this.tracing =
      provider instanceof ProxyTracerProvider ? () => provider.getDelegate() !== NO_SDK_TRACER_PROVIDER : () => true;
    this.stepDuration = this.meter.createHistogram(METRIC.stepDuration, {
      description:
        "Time a step's code ran, from the start of its attempt to its outcome (commit excluded), " +
        "per machine, step and outcome.",
      unit: "ms",
      valueType: ValueType.DOUBLE,
    });
    this.stepsStarted = this.meter.createCounter(METRIC.stepsStarted, {
      description: "Step attempts started on this node.",
      unit: "{step}",
      valueType: ValueType.INT,
    });
    this.leasesLost = this.meter.createCounter(METRIC.leasesLost, {
      description: "Step outcomes discarded because the claim was lost before they committed.",
      unit: "{step}",
      valueType: ValueType.INT,
    });
    this.stepsRateLimited = this.meter.createCounter(METRIC.stepsRateLimited, {
      description: "Steps postponed because their rate-limit bucket was short (no attempt used).",
      unit: "{step}",
      valueType: ValueType.INT,
    });
    this.instancesFinished = this.meter.createCounter(METRIC.instancesFinished, {
      description: "Instances that reached a terminal status (done, failed, cancelled) through this node.",
      unit: "{instance}",
      valueType: ValueType.INT,
    });
    this.queueDepth = this.meter.createObservableGauge(METRIC.queueDepth, {
      description: "Live instances per queue and status, database-wide (every node reports the same figure).",
      unit: "{instance}",
      valueType: ValueType.INT,
    });
    this.observeDepth = async (result) => {
      for (const row of await deps.depth.read())
        result.observe(row.count, { [ATTR.queue]: row.queue, [ATTR.status]: row.status });
    };
    this.queueDepth.addCallback(this.observeDepth);

    const [dead, live, age] = (this.tableGauges = [
      this.meter.createObservableGauge(METRIC.tableDeadTuples, {
        description:
          "Dead tuples in gen-durable's busiest tables (pg_stat_all_tables; every node reports the same figure): " +
          "what vacuum has not reclaimed yet.",
        unit: "{tuple}",
        valueType: ValueType.INT,
      }),
      this.meter.createObservableGauge(METRIC.tableLiveTuples, {
        description: "Live tuples in gen-durable's busiest tables (pg_stat_all_tables).",
        unit: "{tuple}",
        valueType: ValueType.INT,
      }),
      this.meter.createObservableGauge(METRIC.tableVacuumAge, {
        description:
          "Time since the last vacuum (manual or autovacuum) of each of gen-durable's busiest tables; " +
          "absent for a table never vacuumed.",
        unit: "s",
        valueType: ValueType.DOUBLE,
      }),
    ]) as [ObservableGauge, ObservableGauge, ObservableGauge];
    this.observeTables = async (result) => {
      const health = await deps.tables?.read();
      if (!health) return;
      for (const t of health.tables) {
        const attributes = { [ATTR.table]: t.table };
        result.observe(dead, t.deadTuples, attributes);
        result.observe(live, t.liveTuples, attributes);
        const last = Math.max(t.lastVacuum?.getTime() ?? -Infinity, t.lastAutovacuum?.getTime() ?? -Infinity);
        if (Number.isFinite(last))
          result.observe(age, Math.max(0, (health.databaseTime.getTime() - last) / 1000), attributes);
      }
    };
    this.meter.addBatchObservableCallback(this.observeTables, this.tableGauges);

    const { events } = deps;
    this.offs.push(
      events.on("step:start", (e) => this.onStart(e)),
      events.on("step:stop", (e) => this.onStop(e)),
      events.on("step:exception", (e) => this.onException(e)),
      events.on("lease:lost", (e) => this.onLeaseLost(e)),
      events.on("step:released", (e) => this.onReleased(e)),
      events.on("engine:error", (e) => this.onEngineError(e)),
      events.on("step:rate_limited", (e) =>
        this.stepsRateLimited.add(1, {
          [ATTR.machine]: e.machine,
          [ATTR.step]: e.step,
          [ATTR.queue]: e.queue,
          [ATTR.rateLimit]: e.limit,
        }),
      ),
      events.on("instance:done", (e) => this.finished(e.machine, "done")),
      events.on("instance:failed", (e) => this.finished(e.machine, "failed")),
      events.on("instance:cancelled", (e) => this.finished(e.machine, "cancelled")),
    );
  }

  /** Runs a step's code with its span as the active span (see the module comment). */
  around<T>(attempt: StepTraceFacts, run: () => T): T {
    if (this.open.size === 0) return run();
    const open = this.open.get(key(attempt));
    if (!open) return run();
    const links = linksTo([
      { carrier: attempt.trace_context, kind: attempt.parent_id ? "parent" : "inserted" },
      ...(attempt.awaited ?? []).map((signal) => ({ carrier: signal.traceContext, kind: "signal" })),
    ]);
    if (links.length > 0) open.span.addLinks(links);
    return context.with(trace.setSpan(ROOT_CONTEXT, open.span), run);
  }

  /** Stops listening; spans still open (steps abandoned at shutdown) end as `abandoned`. */
  close(): void {
    for (const off of this.offs.splice(0)) off();
    this.queueDepth.removeCallback(this.observeDepth);
    this.meter.removeBatchObservableCallback(this.observeTables, this.tableGauges);
    for (const { span } of this.open.values()) {
      span.setAttribute(ATTR.outcome, "abandoned");
      span.end();
    }
    this.open.clear();
  }

  /** Spans open right now (attempts in flight on this node). */
  get openSpans(): number {
    return this.open.size;
  }

  private onStart(e: StepFacts): void {
    if (!this.observed) return;
    const k = key(e);
    // A second start of the same attempt (a snooze refunds the attempt number) supersedes a span left open.
    this.open.get(k)?.span.end();
    this.open.set(k, { span: this.startSpan(e), startedAt: performance.now(), failed: false });
    this.stepsStarted.add(1, { [ATTR.machine]: e.machine, [ATTR.step]: e.step, [ATTR.queue]: e.queue });
  }

  /** The attempt's outcome committed — a failed attempt's `error`/`failed` outcome included: the span ends here. */
  private onStop(e: EngineEvents["step:stop"]): void {
    const k = key(e);
    const open = this.open.get(k);
    // Every attempt that stops was opened by step:start or step:exception when anything observed
    // it; none open means it started unobserved, and a tracer registered since is used from the
    // next attempt on (a back-dated span here would trace a step that started before it).
    if (!open) return;
    this.open.delete(k);
    const { span } = open;
    span.setAttribute(ATTR.outcome, e.outcome);
    span.end();
    this.stepDuration.record(e.durationMs, {
      [ATTR.machine]: e.machine,
      [ATTR.step]: e.step,
      [ATTR.outcome]: e.outcome,
    });
  }

  /**
   * The attempt failed; its `error`/`failed` outcome is committed next, and
   * step:stop ends the span (or lease:lost, if the commit was fenced).
   */
  private onException(e: EngineEvents["step:exception"]): void {
    const k = key(e);
    // Attempts that never started (exhausted by dead workers, unknown step) still get a span, back-dated by their
    // duration.
    const open = this.open.get(k) ?? {
      span: this.startSpan(e, e.durationMs),
      startedAt: performance.now() - e.durationMs,
      failed: false,
    };
    this.open.set(k, open);
    open.failed = true;
    open.span.setAttributes({
      [ATTR.outcome]: e.willRetry ? "error" : "failed",
      [ATTR.willRetry]: e.willRetry,
      [ATTR.errorType]: e.error.code ?? e.error.name,
    });
    fail(open.span, e.error);
  }

  private onLeaseLost(e: EngineEvents["lease:lost"]): void {
    this.leasesLost.add(1, { [ATTR.machine]: e.machine, [ATTR.step]: e.step, [ATTR.queue]: e.queue });
    const k = key(e);
    const open = this.open.get(k);
    if (!open) return;
    this.open.delete(k);
    open.span.setAttribute(ATTR.outcome, "lease_lost");
    // An attempt aborted by the loss already recorded why (step:exception); do not record it twice.
    if (!open.failed)
      fail(open.span, {
        name: "LeaseLostError",
        message: "the claim was lost before the outcome committed; the outcome was discarded",
        code: "LEASE_LOST",
      });
    open.span.end();
    this.stepDuration.record(performance.now() - open.startedAt, {
      [ATTR.machine]: e.machine,
      [ATTR.step]: e.step,
      [ATTR.outcome]: "lease_lost",
    });
  }

  /** A graceful stop abandoned the step and released its instance: not an error. */
  private onReleased(e: EngineEvents["step:released"]): void {
    const k = key(e);
    const open = this.open.get(k);
    if (!open) return;
    this.open.delete(k);
    open.span.setAttribute(ATTR.outcome, "released");
    open.span.end();
    this.stepDuration.record(performance.now() - open.startedAt, {
      [ATTR.machine]: e.machine,
      [ATTR.step]: e.step,
      [ATTR.outcome]: "released",
    });
  }

  private onEngineError(e: EngineEvents["engine:error"]): void {
    if (!e.step) return;
    const k = key(e.step);
    const open = this.open.get(k);
    if (!open) return;
    this.open.delete(k);
    open.span.setAttribute(ATTR.outcome, "commit_error");
    open.span.recordException(e.error instanceof Error ? e.error : String(e.error));
    open.span.setStatus({
      code: SpanStatusCode.ERROR,
      message: e.error instanceof Error ? e.error.message : String(e.error),
    });
    open.span.end();
  }

  private finished(machine: string, status: "done" | "failed" | "cancelled"): void {
    if (this.metering) this.instancesFinished.add(1, { [ATTR.machine]: machine, [ATTR.status]: status });
  }

  /** Whether a step's span or its metrics go anywhere now (see `tracing`). */
  private get observed(): boolean {
    return this.metering || this.tracing();
  }

  /** A step's root span; back-dated by `durationMs` for one created when the attempt is already over. */
  private startSpan(e: StepFacts, durationMs?: number): Span {
    const options = {
      kind: SpanKind.INTERNAL,
      root: true,
      attributes: stepAttributes(e),
      ...(durationMs === undefined ? {} : { startTime: Date.now() - durationMs }),
    };
    return this.tracer.startSpan(`gen-durable step ${e.machine}.${e.step}`, options, ROOT_CONTEXT);
  }
}

function key(e: { id: string; attempt: number }): string {
  return `${e.id}:${e.attempt}`;
}

function stepAttributes(e: StepFacts): Attributes {
  return {
    [ATTR.instanceId]: e.id,
    [ATTR.machine]: e.machine,
    [ATTR.step]: e.step,
    [ATTR.attempt]: e.attempt,
    [ATTR.queue]: e.queue,
  };
}

function fail(span: Span, error: ErrorRecord): void {
  span.recordException({
    name: error.name,
    message: error.message,
    ...(error.stack ? { stack: error.stack } : {}),
    ...(error.code ? { code: error.code } : {}),
  });
  span.setStatus({ code: SpanStatusCode.ERROR, message: error.message });
}
