/**
 * Engine options, validated once at construction into a frozen object with
 * every default in one place. An unknown key is an error that suggests the
 * nearest valid one.
 */
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import type pg from "pg";
import type { AnyMachine } from "./define.js";
import { type Duration, describe, toMs } from "./duration.js";
import { ConfigError } from "./errors.js";
import { resolveLogger, type Logger } from "./logger.js";
import { resolveTelemetry, type ResolvedTelemetry, type TelemetryOption } from "./telemetry/index.js";
import { DEFAULT_SCHEMA } from "./migrate.js";
import { checkName, checkSchemaName } from "./names.js";
import { rejectUnknownKeys } from "./suggest.js";
import { resolveCron, type CronEntry, type ResolvedCronEntry } from "./cron/entries.js";
import { checkStepRateLimits, resolveRateLimits, type RateLimit, type RateLimitOption } from "./runtime/rate-limits.js";

/** Per-node concurrency, or `{ concurrency, global }`: `global` caps running steps of the queue across all nodes. */
export type QueueOption =
  | number
  | {
      /** Steps of the queue this node runs at a time. */
      concurrency: number;
      /** Steps of the queue running at a time across every node; default: no global limit. */
      global?: number;
    };

export interface QueueConfig {
  concurrency: number;
  /** Running steps of this queue across every node; undefined: no global limit. */
  global: number | undefined;
}

/** The options of `new GenDurable(...)`; docs/configuration.md lists each with its default. */
export interface GenDurableOptions {
  /** Postgres connection string (or pass `pool`). */
  connectionString?: string;
  /** Your own pg.Pool; the engine then does not end it on stop(). */
  pool?: pg.Pool;
  /**
   * A direct connection (not through a transaction-pooling PgBouncer) for the LISTEN connection
   * only. Default: the engine's own connection; behind a pooler, LISTEN is then off and the node
   * polls (see docs/pgbouncer.md).
   */
  listenConnectionString?: string;
  /** Schema holding gen-durable's tables. Default "gen_durable". */
  schema?: string;
  /** Queues this node runs, with per-node concurrency. None: a pure client that runs no loops. */
  queues?: Record<string, QueueOption>;
  /** Machines and jobs this node may run. */
  machines?: readonly AnyMachine[];
  /** Token buckets shared by every node, referenced by steps' `rateLimit`. */
  rateLimits?: Record<string, RateLimitOption>;
  /** How long a claim holds an instance without renewal: 1 s to 1 day. Default "30s". */
  leaseDuration?: Duration;
  /** Poll for due work this often even without NOTIFY. Default "1s". */
  pollInterval?: Duration;
  /** How often the reaper looks for expired leases. Default "5s". */
  reaperInterval?: Duration;
  /** On stop(), how long in-flight steps may run before their leases are released. Default "10s". */
  shutdownGrace?: Duration;
  /**
   * How often the LISTEN connection is pinged; one that does not answer within this is replaced. 100 ms to 1 day.
   * Default "10s".
   */
  listenerHeartbeat?: Duration;
  /** How long a signal sent with ifMissing: "keep" waits for an instance with its key. Default "1d". */
  signalRetention?: Duration;
  /**
   * How long an insert's idempotencyKey is remembered, and how long ifExists "reuse" / "reject" see a
   * finished instance of a correlation key. Default "24h".
   */
  idempotencyWindow?: Duration;
  /** How long terminal instances (with history and signals) are kept before the GC prunes them. Default "7d". */
  retention?: Duration;
  /** How often the GC looks for terminal instances past their retention. Default "1m". */
  gcInterval?: Duration;
  /** Largest JSON state, args, result or signal payload, in bytes. Default 1 MiB. */
  maxPayloadBytes?: number;
  /** Size of the pool the engine creates from connectionString. Default 10. */
  poolSize?: number;
  /**
   * How many connections of that pool stay open while idle, opened by start() (at most poolSize).
   * Default 2; 0 lets every idle connection close after 10 s, as a plain pg.Pool does.
   */
  idleConnections?: number;
  /** A pino-style logger. Default: silent. */
  logger?: Logger;
  /** Name of this node in leases (`leased_by`). Default host:pid:random. */
  nodeId?: string;
  /** OpenTelemetry providers for spans and metrics (default: the global ones), or false for none. */
  telemetry?: TelemetryOption;
  /**
   * Recurring inserts: each tick of an entry inserts one instance, once across all nodes. See
   * docs/scheduling-and-queues.md.
   */
  cron?: readonly CronEntry[];
}

export interface ResolvedConfig {
  connectionString: string | undefined;
  pool: pg.Pool | undefined;
  listenConnectionString: string | undefined;
  schema: string;
  channel: string;
  queues: ReadonlyMap<string, QueueConfig>;
  rateLimits: ReadonlyMap<string, RateLimit>;
  machines: ReadonlyMap<string, AnyMachine>;
  leaseMs: number;
  pollMs: number;
  reaperMs: number;
  shutdownGraceMs: number;
  listenerHeartbeatMs: number;
  signalRetentionMs: number;
  idempotencyWindowMs: number;
  retentionMs: number;
  gcMs: number;
  maxPayloadBytes: number;
  poolSize: number;
  /** Already capped at poolSize. */
  idleConnections: number;
  logger: Logger;
  nodeId: string;
  telemetry: ResolvedTelemetry;
  cron: readonly ResolvedCronEntry[];
}

/** An option checked by its own code in resolveConfig; `default` is what the docs show. */
interface CustomSpec {
  kind: "custom";
  default?: string;
}
/** A duration: parsed by toMs (at most 100 years), then held to `min` and `max` milliseconds. */
interface DurationSpec {
  kind: "duration";
  default: Duration;
  min: number;
  max?: { ms: number; text: string };
}
/** A whole number from `min` to `max`. */
interface IntegerSpec {
  kind: "integer";
  default: number;
  min: number;
  max: number;
}
/** The spec an option of type T may have: a duration or integer spec only for an option of that type. */
type SpecFor<T> = [T] extends [string]
  ? CustomSpec
  : [T] extends [number]
    ? IntegerSpec | CustomSpec
    : [T] extends [Duration]
      ? DurationSpec | CustomSpec
      : CustomSpec;

const custom = { kind: "custom" } as const;
const ONE_DAY = { ms: 86_400_000, text: "1 day" };
const durationOption = <D extends Duration>(def: D, min: number, max?: { ms: number; text: string }) => ({
  kind: "duration" as const,
  default: def,
  min,
  ...(max ? { max } : {}),
});
const integerOption = <N extends number>(def: N, max: number, min = 1) => ({
  kind: "integer" as const,
  default: def,
  min,
  max,
});

/**
 * Every engine option, once: its key, its default and, for durations and
 * integers, its bounds. The key list that unknown keys are checked against and
 * DEFAULTS are derived from it, and the type below makes a key of
 * GenDurableOptions missing here (or one here that is not an option) a compile
 * error. docs/configuration.md documents each (test/unit/config.test.ts
 * checks its table against this one).
 */
export const OPTIONS = {
  connectionString: custom,
  pool: custom,
  listenConnectionString: custom,
  schema: { kind: "custom", default: DEFAULT_SCHEMA },
  queues: custom,
  machines: custom,
  rateLimits: custom,
  // The lease and the listener heartbeat are also the deadlines pg applies to their connections'
  // connects and queries (timers of at most 2^31 - 1 ms): a day is far beyond any useful value.
  leaseDuration: durationOption("30s", 1000, ONE_DAY),
  pollInterval: durationOption("1s", 10),
  reaperInterval: durationOption("5s", 10),
  shutdownGrace: durationOption("10s", 0),
  listenerHeartbeat: durationOption("10s", 100, ONE_DAY),
  signalRetention: durationOption("1d", 0),
  idempotencyWindow: durationOption("24h", 0),
  retention: durationOption("7d", 0),
  gcInterval: durationOption("1m", 10),
  maxPayloadBytes: integerOption(1024 * 1024, 256 * 1024 * 1024),
  poolSize: integerOption(10, 1000),
  idleConnections: integerOption(2, 1000, 0),
  logger: custom,
  nodeId: custom,
  telemetry: custom,
  cron: custom,
} as const satisfies { readonly [K in keyof GenDurableOptions]-?: SpecFor<NonNullable<GenDurableOptions[K]>> };

type Options = typeof OPTIONS;
type KeyOf<Spec> = { [K in keyof Options]: Options[K] extends Spec ? K : never }[keyof Options];

/** The keys of GenDurableOptions, in the order of OPTIONS. */
export const OPTION_KEYS = Object.keys(OPTIONS) as ReadonlyArray<keyof GenDurableOptions>;

/** The defaults of the options that have one. */
export const DEFAULTS = Object.fromEntries(
  Object.entries(OPTIONS).flatMap(([key, spec]) => ("default" in spec ? [[key, spec.default]] : [])),
) as { readonly [K in KeyOf<{ default: unknown }>]: Options[K]["default"] };

export function resolveConfig(options: GenDurableOptions): ResolvedConfig {
  const fail = (m: string) => new ConfigError(`GenDurable: ${m}`);
  if (typeof options !== "object" || options === null)
    throw fail("options are required, e.g. new GenDurable({ connectionString })");
  rejectUnknownKeys(options, OPTION_KEYS, "GenDurable", (m) => new ConfigError(m));
  if (options.pool === undefined && (typeof options.connectionString !== "string" || options.connectionString === "")) {
    throw fail("connectionString (or pool) is required, e.g. connectionString: process.env.DATABASE_URL");
  }
  const schema = checkSchemaName(options.schema ?? DEFAULTS.schema, fail);
  const listen = options.listenConnectionString;
  if (listen !== undefined && (typeof listen !== "string" || listen === ""))
    throw fail(`listenConnectionString must be a non-empty connection string, got ${describe(listen)}`);

  const queues = new Map<string, QueueConfig>();
  if (options.queues !== undefined) {
    if (typeof options.queues !== "object" || options.queues === null || Array.isArray(options.queues)) {
      throw fail(`queues must be an object such as { default: 10 }, got ${describe(options.queues)}`);
    }
    for (const [name, value] of Object.entries(options.queues)) {
      checkName(name, `queues: queue name`, fail);
      const concurrency = typeof value === "number" ? value : (value as { concurrency?: unknown } | null)?.concurrency;
      const global = typeof value === "object" && value !== null ? (value as { global?: unknown }).global : undefined;
      if (typeof value === "object" && value !== null)
        rejectUnknownKeys(value, ["concurrency", "global"], `GenDurable: queues.${name}`, (m) => new ConfigError(m));
      if (
        typeof concurrency !== "number" ||
        !Number.isInteger(concurrency) ||
        concurrency < 1 ||
        concurrency > 10_000
      ) {
        throw fail(
          `queues.${name} must be a concurrency from 1 to 10000 (or { concurrency, global? }), got ${describe(value)}`,
        );
      }
      if (
        global !== undefined &&
        (typeof global !== "number" || !Number.isInteger(global) || global < 1 || global > 1_000_000)
      ) {
        throw fail(
          `queues.${name}.global must be an integer from 1 to 1000000 (running steps across all nodes), ` +
            `got ${describe(global)}`,
        );
      }
      queues.set(name, { concurrency, global });
    }
  }

  const machines = new Map<string, AnyMachine>();
  if (options.machines !== undefined) {
    if (!Array.isArray(options.machines)) throw fail("machines must be an array of defineMachine/defineJob results");
    for (const [i, machine] of options.machines.entries()) {
      if (
        typeof machine !== "object" ||
        machine === null ||
        !(machine.steps instanceof Map) ||
        typeof machine.name !== "string"
      ) {
        throw fail(`machines[${i}] is ${describe(machine)}, not a defineMachine/defineJob result`);
      }
      const twin = machines.get(machine.name);
      if (twin && twin !== machine) throw fail(`two different machines are named "${machine.name}"`);
      if (queues.size > 0 && !queues.has(machine.queue)) {
        throw fail(
          `machine "${machine.name}" runs on queue "${machine.queue}", ` +
            `which is not in queues (${[...queues.keys()].join(", ")})`,
        );
      }
      machines.set(machine.name, machine);
    }
  }
  const rateLimits = resolveRateLimits(options.rateLimits, fail);
  checkStepRateLimits(machines, rateLimits, fail);

  const durationMs = (key: KeyOf<DurationSpec>) => {
    const spec: DurationSpec = OPTIONS[key];
    const parsed = toMs(options[key] ?? spec.default, key, fail);
    if (parsed < spec.min) throw fail(`${key} must be at least ${spec.min} ms, got ${parsed} ms`);
    if (spec.max && parsed > spec.max.ms)
      throw fail(`${key} must be at most ${spec.max.text} (${spec.max.ms} ms), got ${parsed} ms`);
    return parsed;
  };
  const wholeNumber = (key: KeyOf<IntegerSpec>) => {
    const { default: def, min, max }: IntegerSpec = OPTIONS[key];
    const value: unknown = options[key];
    if (value === undefined) return def;
    if (typeof value !== "number" || !Number.isInteger(value) || value < min || value > max)
      throw fail(`${key} must be an integer from ${min} to ${max}, got ${describe(value)}`);
    return value;
  };

  const logger = resolveLogger(options.logger, fail);
  const nodeId = options.nodeId ?? `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
  checkName(nodeId, "nodeId", fail);

  return Object.freeze({
    connectionString: options.connectionString,
    pool: options.pool,
    listenConnectionString: listen,
    schema,
    channel: `gen_durable_${schema}`,
    queues,
    rateLimits,
    machines,
    leaseMs: durationMs("leaseDuration"),
    pollMs: durationMs("pollInterval"),
    reaperMs: durationMs("reaperInterval"),
    shutdownGraceMs: durationMs("shutdownGrace"),
    listenerHeartbeatMs: durationMs("listenerHeartbeat"),
    signalRetentionMs: durationMs("signalRetention"),
    idempotencyWindowMs: durationMs("idempotencyWindow"),
    retentionMs: durationMs("retention"),
    gcMs: durationMs("gcInterval"),
    maxPayloadBytes: wholeNumber("maxPayloadBytes"),
    poolSize: wholeNumber("poolSize"),
    idleConnections: Math.min(wholeNumber("idleConnections"), wholeNumber("poolSize")),
    logger,
    nodeId,
    telemetry: resolveTelemetry(options.telemetry, fail),
    // After maxPayloadBytes is known good: the entries' states are checked against it.
    cron: resolveCron(options.cron, machines, wholeNumber("maxPayloadBytes"), fail),
  });
}
