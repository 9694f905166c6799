/**
 * Vacuum health of the hot tables (src/sql/tables.ts): read for `gen-durable
 * status` and the table gauges, and watched by every worker node, which warns
 * (an `engine:warning` event and a log line) when autovacuum cannot run on
 * them, their dead tuples pile up, or a session holds the xmin horizon back
 * (a transaction left open: vacuum then removes nothing that died since).
 *
 * Why it matters: every step rewrites its instance row (claim, outcome) and
 * every keyed change or token draw rewrites a key or bucket row. Measured on
 * Postgres 15 with autovacuum off, the soak (bench/soak, ~300 instances/s) left
 * ~1,400 dead tuples a second in `instances`, seven dead rows for each live one
 * after 4 minutes, and its orders fell behind. The migrations give these tables
 * autovacuum settings of their own (migration 0009), but settings on a table
 * cannot turn autovacuum on where the server has it off: that is what the
 * warning is for.
 */
import type pg from "pg";
import type { TypedEmitter } from "../events.js";
import type { Logger } from "../logger.js";
import { horizonHolders, HOT_TABLES, tableHealth } from "../sql/tables.js";

export interface TableHealth {
  table: string;
  /** Estimated live and dead tuples (pg_stat_all_tables). */
  liveTuples: number;
  deadTuples: number;
  /** Last manual VACUUM and last autovacuum of the table; null: never (since the statistics were reset). */
  lastVacuum: Date | null;
  lastAutovacuum: Date | null;
  /** The table's `autovacuum_enabled` storage parameter (true unless set off). */
  autovacuumEnabled: boolean;
}

export interface VacuumWarning {
  kind: "autovacuum_off" | "dead_tuples" | "horizon_held";
  /** The table concerned; absent when the server setting concerns all of them. */
  table?: string;
  /** horizon_held: the backend whose snapshot holds the horizon. */
  pid?: number;
  message: string;
}

/** A session whose snapshot keeps vacuum from removing dead rows (see horizonHolders in sql/tables.ts). */
export interface HorizonHolder {
  pid: number;
  applicationName: string;
  user: string;
  /** pg_stat_activity.state: "idle in transaction", "active"... */
  state: string;
  /** Since when it holds it, at most: the age of its transaction (or statement). */
  heldMs: number;
  /** Transactions committed since its snapshot's xmin: age(backend_xmin). */
  xminAge: number;
}

/**
 * A session that holds the horizon longer than this is worth a warning: the soak workload leaves
 * ~1,400 dead rows a second in instances, none of which vacuum can remove meanwhile.
 */
export const HORIZON_WARN_MS = 2 * 60_000;

/** The sessions holding the xmin horizon of this database for longer than `heldMs`, oldest first (at most 5). */
export async function readHorizonHolders(db: pg.Pool | pg.ClientBase, heldMs: number): Promise<HorizonHolder[]> {
  const { rows } = await horizonHolders(db, { heldMs });
  return rows.map((r) => ({
    pid: r.pid,
    applicationName: r.application_name,
    user: r.usename,
    state: r.state,
    heldMs: Number(r.held_ms),
    xminAge: Number(r.xmin_age),
  }));
}

/** One warning per holder, naming it and what it costs (the dead tuples vacuum must leave meanwhile). */
export function horizonWarnings(holders: readonly HorizonHolder[], tables: readonly TableHealth[]): VacuumWarning[] {
  const dead = tables
    .filter((t) => t.deadTuples > 0)
    .map((t) => `${t.table} ${Math.round(t.deadTuples)}`)
    .join(", ");
  return holders.map((h) => ({
    kind: "horizon_held" as const,
    pid: h.pid,
    message:
      `session pid ${h.pid} (application_name "${h.applicationName}", user "${h.user}", ` +
      `${h.state || "state unknown"}) ` +
      `has held the xmin horizon for ${Math.round(h.heldMs / 1000)} s (${h.xminAge} transactions): ` +
      "vacuum can remove no row " +
      `version that died since, and dead tuples grow at the rate steps run (now: ${dead || "none"}). ` +
      `End that transaction (pg_terminate_backend(${h.pid}) if it is forgotten); see docs/operations.md, Vacuum`,
  }));
}

export interface VacuumHealth {
  /** The server's `autovacuum` setting. */
  autovacuum: boolean;
  /** The server's `track_counts` (autovacuum needs it). */
  trackCounts: boolean;
  tables: TableHealth[];
  warnings: VacuumWarning[];
  databaseTime: Date;
}

/** Dead tuples above both of these (so many, and more than live ones) mean vacuum is not keeping up. */
export const DEAD_TUPLES_WARN = { atLeast: 100_000, perLiveTuple: 1 } as const;

/** Reads the hot tables of `schema` (one catalog query). */
export async function readVacuumHealth(db: pg.Pool | pg.ClientBase, schema: string): Promise<VacuumHealth> {
  const { rows } = await tableHealth(db, { schema, tables: HOT_TABLES });
  const first = rows[0];
  const autovacuum = first?.server_autovacuum ?? true;
  const trackCounts = first?.track_counts ?? true;
  const tables = rows.map((r) => ({
    table: r.table,
    liveTuples: Number(r.live),
    deadTuples: Number(r.dead),
    lastVacuum: r.last_vacuum,
    lastAutovacuum: r.last_autovacuum,
    autovacuumEnabled: r.table_autovacuum,
  }));
  return {
    autovacuum,
    trackCounts,
    tables,
    warnings: vacuumWarnings(autovacuum, trackCounts, tables),
    databaseTime: first?.now ?? new Date(),
  };
}

/** What an operator must hear about: autovacuum unable to run on a hot table, or dead tuples piling up. */
export function vacuumWarnings(
  autovacuum: boolean,
  trackCounts: boolean,
  tables: readonly TableHealth[],
): VacuumWarning[] {
  const warnings: VacuumWarning[] = [];
  const names = tables.map((t) => t.table).join(", ");
  if (!autovacuum || !trackCounts) {
    warnings.push({
      kind: "autovacuum_off",
      message:
        "autovacuum cannot run on gen-durable's tables: " +
        `the server has ${!autovacuum ? "autovacuum = off" : "track_counts = off"} ` +
        "(per-table settings cannot turn it on). " +
        `Every step leaves dead rows in ${names || "its tables"}; without vacuum they slow every claim. ` +
        "Turn it on, or VACUUM these tables on a schedule (see docs/operations.md)",
    });
  }
  for (const t of tables) {
    if (autovacuum && trackCounts && !t.autovacuumEnabled) {
      warnings.push({
        kind: "autovacuum_off",
        table: t.table,
        message:
          `autovacuum is off for table ${t.table} (autovacuum_enabled = false): ` +
          "its dead rows pile up and slow every claim. " +
          "Reset it (alter table ... reset (autovacuum_enabled)) or VACUUM it on a schedule",
      });
    }
    if (t.deadTuples >= DEAD_TUPLES_WARN.atLeast && t.deadTuples >= DEAD_TUPLES_WARN.perLiveTuple * t.liveTuples) {
      const last = [t.lastVacuum, t.lastAutovacuum]
        .filter((d): d is Date => d !== null)
        .sort((a, b) => b.getTime() - a.getTime())[0];
      warnings.push({
        kind: "dead_tuples",
        table: t.table,
        message:
          `table ${t.table} holds ${Math.round(t.deadTuples)} dead tuples ` +
          `against ${Math.round(t.liveTuples)} live ones ` +
          `(last vacuum: ${last ? last.toISOString() : "never"}): ` +
          "vacuum is not keeping up, and claims slow down as they pile up (see docs/operations.md, Vacuum)",
      });
    }
  }
  return warnings;
}

/** How often a warning that still holds is repeated. */
const REPEAT_MS = 15 * 60_000;

/**
 * The engine's watch (its "tables" loop, once a minute on worker nodes): emits
 * `engine:warning` and logs each warning when it first appears, and again
 * every 15 minutes while it holds.
 */
export class VacuumWatch {
  private readonly lastSaid = new Map<string, number>();

  constructor(
    private readonly o: {
      pool: pg.Pool;
      schema: string;
      events: TypedEmitter;
      logger: Logger;
      /** Warn of a session holding the xmin horizon longer than this (default HORIZON_WARN_MS). */
      horizonMs?: number;
    },
  ) {}

  async check(): Promise<VacuumWarning[]> {
    const started = performance.now();
    const health = await readVacuumHealth(this.o.pool, this.o.schema);
    const holders = await readHorizonHolders(this.o.pool, this.o.horizonMs ?? HORIZON_WARN_MS);
    const warnings = [...health.warnings, ...horizonWarnings(holders, health.tables)];
    const now = Date.now();
    const current = new Set<string>();
    for (const warning of warnings) {
      const key = `${warning.kind}:${warning.table ?? ""}:${warning.pid ?? ""}`;
      current.add(key);
      const said = this.lastSaid.get(key);
      if (said !== undefined && now - said < REPEAT_MS) continue;
      this.lastSaid.set(key, now);
      this.o.events.emit("engine:warning", warning);
      this.o.logger.warn(
        {
          kind: warning.kind,
          ...(warning.table ? { table: warning.table } : {}),
          ...(warning.pid !== undefined ? { pid: warning.pid } : {}),
        },
        `gen-durable: ${warning.message}`,
      );
    }
    // A warning that went away is said again at once if it comes back.
    for (const key of [...this.lastSaid.keys()]) if (!current.has(key)) this.lastSaid.delete(key);
    this.o.events.emit("loop:tick", {
      loop: "tables",
      durationMs: performance.now() - started,
      count: warnings.length,
    });
    return warnings;
  }
}

/**
 * The table gauges' source: the hot tables' health, read at most once per
 * `intervalMs` (collections in between reuse it), like the queue depth.
 */
export class TableHealthSampler {
  private last: { at: number; health: VacuumHealth } | undefined;
  private pending: Promise<VacuumHealth | undefined> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly schema: string,
    private readonly intervalMs: number,
    private readonly onError: (error: unknown) => void,
  ) {}

  async read(): Promise<VacuumHealth | undefined> {
    if (this.last && performance.now() - this.last.at < this.intervalMs) return this.last.health;
    this.pending ??= readVacuumHealth(this.pool, this.schema)
      .then((health) => {
        this.last = { at: performance.now(), health };
        return health;
      })
      .catch((error: unknown) => {
        this.onError(error);
        return undefined;
      })
      .finally(() => (this.pending = undefined));
    return this.pending;
  }
}
