/**
 * Telemetry wiring: the `telemetry` option, and what the engine attaches when
 * it starts — the OpenTelemetry bridge (./otel.ts) and the log lines derived
 * from events (./log-events.ts). The engine calls `attachTelemetry` in
 * start() (not in the constructor) so an SDK registered between the two is
 * used: the API's global MeterProvider has no proxy, and a meter taken before
 * registration would stay a no-op forever.
 */
import { metrics, trace, type MeterProvider, type TracerProvider } from "@opentelemetry/api";
import type pg from "pg";
import { describe, toMs, type Duration } from "../duration.js";
import type { TypedEmitter } from "../events.js";
import type { Logger } from "../logger.js";
import { rejectUnknownKeys } from "../suggest.js";
import { logEvents } from "./log-events.js";
import { OtelBridge, type StepTraceFacts } from "./otel.js";
import { QueueDepthSampler } from "./queue-depth.js";
import { TableHealthSampler } from "./table-health.js";

/** The engine option `telemetry`: where spans and metrics go, and how often the gauges query the database. */
export interface TelemetryOptions {
  /**
   * Where step spans go. Default: the global provider (`trace.setGlobalTracerProvider`, which the OTel SDKs call on
   * `register()`/`start()`).
   */
  tracerProvider?: TracerProvider;
  /** Where metrics go. Default: the global provider (`metrics.setGlobalMeterProvider`). */
  meterProvider?: MeterProvider;
  /**
   * Least time between two queue-depth (and table-health) queries; collections in between reuse the last figure.
   * Default "5s".
   */
  queueDepthInterval?: Duration;
}

/** The `telemetry` option: providers to use, or `false` for no OpenTelemetry at all. */
export type TelemetryOption = TelemetryOptions | false;

export interface ResolvedTelemetry {
  enabled: boolean;
  tracerProvider: TracerProvider | undefined;
  meterProvider: MeterProvider | undefined;
  queueDepthIntervalMs: number;
}

export const TELEMETRY_DEFAULTS = { queueDepthInterval: "5s" } as const;
const KEYS = ["tracerProvider", "meterProvider", "queueDepthInterval"] as const satisfies ReadonlyArray<
  keyof TelemetryOptions
>;

/** Validates the `telemetry` option; `fail` makes the ConfigError. */
export function resolveTelemetry(value: unknown, fail: (message: string) => Error): ResolvedTelemetry {
  const off = { enabled: false, tracerProvider: undefined, meterProvider: undefined, queueDepthIntervalMs: 0 };
  if (value === false) return off;
  if (value === undefined) value = {};
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw fail(
      `telemetry must be { tracerProvider?, meterProvider?, queueDepthInterval? } or false, got ${describe(value)}`,
    );
  }
  rejectUnknownKeys(value, KEYS, "telemetry", fail);
  const options = value as TelemetryOptions;
  const provider = (key: "tracerProvider" | "meterProvider", method: "getTracer" | "getMeter") => {
    const candidate = options[key] as unknown;
    if (candidate === undefined) return undefined;
    if (
      typeof candidate !== "object" ||
      candidate === null ||
      typeof (candidate as Record<string, unknown>)[method] !== "function"
    ) {
      throw fail(
        `telemetry.${key} must be an OpenTelemetry ${key === "tracerProvider" ? "TracerProvider" : "MeterProvider"} ` +
          `(with ${method}()), got ${describe(candidate)}`,
      );
    }
    return candidate;
  };
  const queueDepthIntervalMs = toMs(
    options.queueDepthInterval ?? TELEMETRY_DEFAULTS.queueDepthInterval,
    "telemetry.queueDepthInterval",
    fail,
  );
  return {
    enabled: true,
    tracerProvider: provider("tracerProvider", "getTracer") as TracerProvider | undefined,
    meterProvider: provider("meterProvider", "getMeter") as MeterProvider | undefined,
    queueDepthIntervalMs,
  };
}

export interface TelemetryDeps {
  events: TypedEmitter;
  logger: Logger;
  /** True for the default silent logger: no log subscriptions at all. */
  silent: boolean;
  pool: pg.Pool;
  schema: string;
  /** Queues this node runs (reported at depth 0 when empty). */
  queues: readonly string[];
  options: ResolvedTelemetry;
  /** Reports a failed queue-depth sample (engine:error, loop "telemetry"). */
  onError: (error: unknown) => void;
}

export interface Telemetry {
  /** Runs a step's code inside its span's context (the executor's `around` hook). */
  around<T>(attempt: StepTraceFacts, run: () => T): T;
  /** Unsubscribes everything; ends spans still open. */
  close(): void;
}

export function attachTelemetry(deps: TelemetryDeps): Telemetry {
  const offLog = deps.silent ? () => {} : logEvents(deps.events, deps.logger);
  if (!deps.options.enabled) {
    return { around: (_attempt, run) => run(), close: offLog };
  }
  const depth = new QueueDepthSampler(
    deps.pool,
    deps.schema,
    deps.options.queueDepthIntervalMs,
    deps.queues,
    deps.onError,
  );
  const bridge = new OtelBridge({
    events: deps.events,
    tracerProvider: deps.options.tracerProvider ?? trace.getTracerProvider(),
    meterProvider: deps.options.meterProvider ?? metrics.getMeterProvider(),
    depth,
    tables: new TableHealthSampler(deps.pool, deps.schema, deps.options.queueDepthIntervalMs, deps.onError),
  });
  return {
    around: (attempt, run) => bridge.around(attempt, run),
    close: () => {
      offLog();
      bridge.close();
    },
  };
}

export { ATTR, METRIC, SCOPE } from "./otel.js";
