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
import { checkRetention } from "./loops/gc.js";
import { rejectUnknownKeys } from "./suggest.js";
import { resolveCron, type CronEntry, type ResolvedCronEntry } from "./cron/entries.js";
import { checkStepRateLimits, resolveRateLimits, type RateLimit, type RateLimitOption } from "./runtime/rate-limits.js";

/** Per-node concurrency, or `{ concurrency, global }`: `global` caps running steps of the queue across all nodes. */
export type QueueOption = number | { concurrency: number; global?: number };

export interface QueueConfig {
  concurrency: number;
  /** Running steps of this queue across every node; undefined: no global limit. */
  global: number | undefined;
}

export interface GenDurableOptions {
  /** Postgres connection string (or pass `pool`). */
  connectionString?: string;
  /** Your own pg.Pool; the engine then does not end it on stop(). */
  pool?: pg.Pool;
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
  /** How often the LISTEN connection is pinged; one that does not answer within this is replaced. 100 ms to 1 day. Default "10s". */
  listenerHeartbeat?: Duration;
  /** How long a signal sent with ifMissing: "keep" waits for an instance with its key. Default "1d". */
  signalRetention?: Duration;
  /** How long terminal instances (with history and signals) are kept before the GC prunes them. Default "7d". */
  retention?: Duration;
  /** How often the GC looks for terminal instances past their retention. Default "1m". */
  gcInterval?: Duration;
  /** Largest JSON state, args, result or signal payload, in bytes. Default 1 MiB. */
  maxPayloadBytes?: number;
  /** Size of the pool the engine creates from connectionString. Default 10. */
  poolSize?: number;
  /** A pino-style logger. Default: silent. */
  logger?: Logger;
  /** Name of this node in leases (`leased_by`). Default host:pid:random. */
  nodeId?: string;
  /** OpenTelemetry providers for spans and metrics (default: the global ones), or false for none. */
  telemetry?: TelemetryOption;
  /** Recurring inserts: each tick of an entry inserts one instance, once across all nodes. See docs/scheduling-and-queues.md. */
  cron?: readonly CronEntry[];
}

export interface ResolvedConfig {
  connectionString: string | undefined;
  pool: pg.Pool | undefined;
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
  retentionMs: number;
  gcMs: number;
  maxPayloadBytes: number;
  poolSize: number;
  logger: Logger;
  nodeId: string;
  telemetry: ResolvedTelemetry;
  cron: readonly ResolvedCronEntry[];
}

const KEYS = [
  "connectionString",
  "pool",
  "schema",
  "queues",
  "machines",
  "rateLimits",
  "leaseDuration",
  "pollInterval",
  "reaperInterval",
  "shutdownGrace",
  "listenerHeartbeat",
  "signalRetention",
  "retention",
  "gcInterval",
  "maxPayloadBytes",
  "poolSize",
  "logger",
  "nodeId",
  "telemetry",
  "cron",
] as const satisfies ReadonlyArray<keyof GenDurableOptions>;

export const DEFAULTS = {
  schema: DEFAULT_SCHEMA,
  leaseDuration: "30s",
  pollInterval: "1s",
  reaperInterval: "5s",
  shutdownGrace: "10s",
  listenerHeartbeat: "10s",
  signalRetention: "1d",
  retention: "7d",
  gcInterval: "1m",
  maxPayloadBytes: 1024 * 1024,
  poolSize: 10,
} as const;

const ONE_DAY = { ms: 86_400_000, text: "1 day" };

export function resolveConfig(options: GenDurableOptions): ResolvedConfig {
  const fail = (m: string) => new ConfigError(`GenDurable: ${m}`);
  if (typeof options !== "object" || options === null) throw fail("options are required, e.g. new GenDurable({ connectionString })");
  rejectUnknownKeys(options, KEYS, "GenDurable", (m) => new ConfigError(m));
  if (options.pool === undefined && (typeof options.connectionString !== "string" || options.connectionString === "")) {
    throw fail("connectionString (or pool) is required, e.g. connectionString: process.env.DATABASE_URL");
  }
  const schema = checkSchemaName(options.schema ?? DEFAULTS.schema, fail);

  const queues = new Map<string, QueueConfig>();
  if (options.queues !== undefined) {
    if (typeof options.queues !== "object" || options.queues === null || Array.isArray(options.queues)) {
      throw fail(`queues must be an object such as { default: 10 }, got ${describe(options.queues)}`);
    }
    for (const [name, value] of Object.entries(options.queues)) {
      checkName(name, `queues: queue name`, fail);
      const concurrency = typeof value === "number" ? value : (value as { concurrency?: unknown } | null)?.concurrency;
      const global = typeof value === "object" && value !== null ? (value as { global?: unknown }).global : undefined;
      if (typeof value === "object" && value !== null) rejectUnknownKeys(value, ["concurrency", "global"], `GenDurable: queues.${name}`, (m) => new ConfigError(m));
      if (typeof concurrency !== "number" || !Number.isInteger(concurrency) || concurrency < 1 || concurrency > 10_000) {
        throw fail(`queues.${name} must be a concurrency from 1 to 10000 (or { concurrency, global? }), got ${describe(value)}`);
      }
      if (global !== undefined && (typeof global !== "number" || !Number.isInteger(global) || global < 1 || global > 1_000_000)) {
        throw fail(`queues.${name}.global must be an integer from 1 to 1000000 (running steps across all nodes), got ${describe(global)}`);
      }
      queues.set(name, { concurrency, global });
    }
  }

  const machines = new Map<string, AnyMachine>();
  if (options.machines !== undefined) {
    if (!Array.isArray(options.machines)) throw fail("machines must be an array of defineMachine/defineJob results");
    for (const [i, machine] of options.machines.entries()) {
      if (typeof machine !== "object" || machine === null || !(machine.steps instanceof Map) || typeof machine.name !== "string") {
        throw fail(`machines[${i}] is ${describe(machine)}, not a defineMachine/defineJob result`);
      }
      const twin = machines.get(machine.name);
      if (twin && twin !== machine) throw fail(`two different machines are named "${machine.name}"`);
      if (queues.size > 0 && !queues.has(machine.queue)) {
        throw fail(`machine "${machine.name}" runs on queue "${machine.queue}", which is not in queues (${[...queues.keys()].join(", ")})`);
      }
      machines.set(machine.name, machine);
    }
  }
  const rateLimits = resolveRateLimits(options.rateLimits, fail);
  checkStepRateLimits(machines, rateLimits, fail);

  const positiveInt = (value: unknown, key: string, def: number, max: number) => {
    if (value === undefined) return def;
    if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > max) throw fail(`${key} must be an integer from 1 to ${max}, got ${describe(value)}`);
    return value;
  };
  const ms = (value: unknown, key: keyof typeof DEFAULTS, min: number, max?: { ms: number; text: string }) => {
    const parsed = toMs(value ?? DEFAULTS[key], key, fail);
    if (parsed < min) throw fail(`${key} must be at least ${min} ms, got ${parsed} ms`);
    if (max && parsed > max.ms) throw fail(`${key} must be at most ${max.text} (${max.ms} ms), got ${parsed} ms`);
    return parsed;
  };

  const logger = resolveLogger(options.logger, fail);
  const nodeId = options.nodeId ?? `${hostname()}:${process.pid}:${randomBytes(3).toString("hex")}`;
  checkName(nodeId, "nodeId", fail);

  return Object.freeze({
    connectionString: options.connectionString,
    pool: options.pool,
    schema,
    channel: `gen_durable_${schema}`,
    queues,
    rateLimits,
    machines,
    // The lease and the listener heartbeat are also the deadlines pg applies to their connections'
    // connects and queries (timers of at most 2^31 - 1 ms): a day is far beyond any useful value.
    leaseMs: ms(options.leaseDuration, "leaseDuration", 1000, ONE_DAY),
    pollMs: ms(options.pollInterval, "pollInterval", 10),
    reaperMs: ms(options.reaperInterval, "reaperInterval", 10),
    shutdownGraceMs: ms(options.shutdownGrace, "shutdownGrace", 0),
    listenerHeartbeatMs: ms(options.listenerHeartbeat, "listenerHeartbeat", 100, ONE_DAY),
    signalRetentionMs: ms(options.signalRetention, "signalRetention", 0),
    retentionMs: checkRetention(options.retention ?? DEFAULTS.retention, "retention", fail),
    gcMs: ms(options.gcInterval, "gcInterval", 10),
    maxPayloadBytes: positiveInt(options.maxPayloadBytes, "maxPayloadBytes", DEFAULTS.maxPayloadBytes, 256 * 1024 * 1024),
    poolSize: positiveInt(options.poolSize, "poolSize", DEFAULTS.poolSize, 1000),
    logger,
    nodeId,
    telemetry: resolveTelemetry(options.telemetry, fail),
    // After maxPayloadBytes is known good: the entries' states are checked against it.
    cron: resolveCron(options.cron, machines, positiveInt(options.maxPayloadBytes, "maxPayloadBytes", DEFAULTS.maxPayloadBytes, 256 * 1024 * 1024), fail),
  });
}
