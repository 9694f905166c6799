/**
 * What GenDurable.start() checks and records before any loop runs: that the schema is migrated and
 * the pool is fit, the clock; then what other nodes, pruners and the SQL API read from the database
 * (retentions, machine defaults, this node's heartbeat row). The checks are independent reads, and
 * the records independent writes (each its own transaction, or the lease connection's statement):
 * each group runs side by side, on connections of their own. One after another, their round trips
 * and the connections opened for them one by one were most of a start (bench/README.md, "Figures
 * behind choices in the code").
 */
import type pg from "pg";
import type { ResolvedConfig } from "./config.js";
import { checkDeferredCron, type ResolvedCronEntry } from "./cron/entries.js";
import { ConfigError, NotMigratedError } from "./errors.js";
import type { ClockWatch } from "./loops/clock-skew.js";
import type { Pruner } from "./loops/gc.js";
import { heartbeat, type NodeInfo } from "./loops/lease.js";
import { currentVersion, LATEST_MIGRATION } from "./migrate.js";
import type { EngineClock } from "./runtime/clock.js";
import type { Leases } from "./runtime/leases.js";
import { recordForSql } from "./runtime/sql-api.js";
import type { Queries } from "./sql/index.js";

/** Nothing is written yet: a failure leaves no trace. Returns the cron entries with every value checked. */
export async function checkBeforeStart(deps: {
  pool: pg.Pool;
  config: ResolvedConfig;
  checkPool: () => Promise<void>;
  clock: EngineClock;
}): Promise<readonly ResolvedCronEntry[]> {
  const { pool, config } = deps;
  // Values of asynchronous schemas could not be checked in the constructor: before anything runs.
  const cron = await checkDeferredCron(config.cron, config.maxPayloadBytes, (m) => new ConfigError(`GenDurable: ${m}`));
  const [version, poolChecked, clockRead] = await Promise.allSettled([
    currentVersion(pool, config.schema),
    deps.checkPool(),
    deps.clock.sync(pool, config.schema),
  ]);
  // The schema's version is told first: a schema not migrated also fails the clock's read.
  const migrated = valueOf(version);
  if (migrated < LATEST_MIGRATION) throw new NotMigratedError(config.schema, migrated, LATEST_MIGRATION);
  valueOf(poolChecked);
  valueOf(clockRead);
  return cron;
}

/** Records what other processes read of this engine. */
export async function recordStart(deps: {
  pool: pg.Pool;
  config: ResolvedConfig;
  sql: Queries;
  pruner: Pruner;
  leases: Leases;
  clockWatch: ClockWatch;
  node: NodeInfo;
}): Promise<void> {
  const { pool, config, sql } = deps;
  await allSettledOrFirstError([
    // Every pruner (any node, the CLI) must honour this engine's per-machine retention.
    deps.pruner.recordRetentions(),
    // The SQL API's insert and signal take machines' defaults and these options from the database.
    recordForSql(pool, sql.sqlApi, config.schema, config.machines, config),
    config.queues.size > 0
      ? heartbeat({ leases: deps.leases, flow: sql.flow, node: deps.node, clock: deps.clockWatch })
      : undefined,
  ]);
}

/** The value of a settled promise, or its error thrown. */
function valueOf<T>(settled: PromiseSettledResult<T>): T {
  if (settled.status === "rejected") throw settled.reason;
  return settled.value;
}

/**
 * Waits for every one of `work` and then throws the first error, if any: a start that fails leaves
 * nothing of its own still writing (start() may be called again at once).
 */
export async function allSettledOrFirstError(work: ReadonlyArray<Promise<unknown> | undefined>): Promise<void> {
  for (const settled of await Promise.allSettled(work)) valueOf(settled);
}
