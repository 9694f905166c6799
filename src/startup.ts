/**
 * What GenDurable.start() checks and records before any loop runs: that the schema is migrated and
 * the pool is fit, the clock; then what other nodes, pruners and the SQL API read from the database
 * (retentions, machine defaults, this node's heartbeat row).
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
  const version = await currentVersion(pool, config.schema);
  if (version < LATEST_MIGRATION) throw new NotMigratedError(config.schema, version, LATEST_MIGRATION);
  await deps.checkPool();
  await deps.clock.sync(pool, config.schema);
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
  // Every pruner (any node, the CLI) must honour this engine's per-machine retention.
  await deps.pruner.recordRetentions();
  // The SQL API's insert and signal take machines' defaults and these options from the database.
  await recordForSql(pool, sql.sqlApi, config.schema, config.machines, config);
  if (config.queues.size > 0)
    await heartbeat({ leases: deps.leases, flow: sql.flow, node: deps.node, clock: deps.clockWatch });
}
