/**
 * The GC: prunes terminal instances (with their history and signals) once
 * they are older than their retention, in bounded keyset batches of short
 * transactions. Used by the engine's "gc" loop, by `engine.prune()` and by
 * `gen-durable prune`. The safety argument (what is never deleted, why two
 * pruners cannot deadlock) is in src/sql/gc.ts.
 *
 * Retention of a machine: `olderThan` when the caller gives one; else the
 * machine's own `retention` (from this engine's definitions, or recorded in the
 * database by an engine that defines it); else the engine's `retention`.
 */
import type pg from "pg";
import { checkRetention, type AnyMachine } from "../define.js";
import { describe, type Duration } from "../duration.js";
import { ValidationError } from "../errors.js";
import type { TypedEmitter } from "../events.js";
import { withTransaction } from "../db/pool.js";
import { checkName } from "../names.js";
import { gcQueries, type GcQueries, type PruneBatchRow, type PruneCursor } from "../sql/gc.js";
import { signalQueries, type SignalQueries } from "../sql/signals.js";
import { rejectUnknownKeys } from "../suggest.js";

/** Options of `engine.prune`: which terminal instances to delete now. */
export interface PruneOptions {
  /** Prune terminal instances older than this, whatever their machine's retention. */
  olderThan?: Duration;
  /** Only instances of this machine (and then no expired inbox signals). */
  machine?: string;
  /** At most this many instances in this call. Default: all that are due. */
  limit?: number;
}

/** What `engine.prune` deleted. */
export interface PruneResult {
  /** Instances deleted. */
  instances: number;
  /** Their history rows (engine.history) deleted. */
  transitions: number;
  /** Their signals, and inbox signals past signalRetention, deleted. */
  signals: number;
}

/**
 * Instances per statement: few enough that each transaction stays short (an
 * instance goes with its history and signals, several rows each; bench/README.md
 * has the timing), many enough that 100,000 terminal rows still go in 100
 * round trips.
 */
export const GC_BATCH = 1000;
/** Instances per loop tick before it yields (and ticks again at once): bounds how long stop() waits for a tick. */
export const GC_TICK_LIMIT = 20 * GC_BATCH;

export interface PrunerOptions {
  pool: pg.Pool;
  schema: string;
  retentionMs: number;
  /** Correlation keys of instances pruned within this window are remembered (ifExists); expired keys are deleted. */
  idempotencyWindowMs?: number;
  machines: ReadonlyMap<string, AnyMachine>;
  events: TypedEmitter;
  /** Called when a tick stopped at its limit with more left to prune. */
  more: () => void;
  /** Instances per tick; default GC_TICK_LIMIT (tests lower it). */
  tickLimit?: number;
}

export class Pruner {
  private readonly q: GcQueries;
  /** The same sweep of expired inbox signals the reaper runs. */
  private readonly expireInbox: SignalQueries["expireInbox"];
  /** Where the next tick starts in the machine list, so a large backlog of one machine does not starve the others. */
  private rotation = 0;

  constructor(private readonly options: PrunerOptions) {
    this.q = gcQueries(options.schema);
    this.expireInbox = signalQueries(options.schema).expireInbox;
  }

  /** Records the retention overrides of this engine's machines, so that every pruner honours them. */
  async recordRetentions(): Promise<void> {
    const machines = [...this.options.machines.values()];
    if (machines.length === 0) return;
    const withOverride = machines.filter((m) => m.retentionMs !== undefined).sort((a, b) => (a.name < b.name ? -1 : 1));
    const without = machines.filter((m) => m.retentionMs === undefined).map((m) => m.name);
    const overrides = withOverride.map((m) => ({ machine: m.name, ms: Math.round(m.retentionMs!) }));
    // Serialised per schema: engines of two versions starting together (one adding M's
    // override, the other removing it) would otherwise lock rows in opposite orders.
    await withTransaction(this.options.pool, async (client) => {
      await this.q.lockRetentions(client, { key: `gen_durable:gc_retention:${this.options.schema}` });
      await this.q.recordRetentions(client, { overrides, without });
    });
  }

  /**
   * One GC loop tick: everything due, up to the tick limit (then `more()` asks
   * for another tick at once); emits loop:tick with count = rows deleted
   * (instances, transitions and signals together).
   */
  async tick(): Promise<void> {
    const started = performance.now();
    const limit = this.options.tickLimit ?? GC_TICK_LIMIT;
    const result = await this.run({ limit, rotate: true });
    this.options.events.emit("loop:tick", {
      loop: "gc",
      durationMs: performance.now() - started,
      count: result.instances + result.transitions + result.signals,
    });
    if (result.instances >= limit) this.options.more();
  }

  /** engine.prune(): validates the options, then prunes. */
  async prune(options: PruneOptions = {}): Promise<PruneResult> {
    const bad = (m: string) => new ValidationError(`prune: ${m}`);
    if (typeof options !== "object" || options === null || Array.isArray(options))
      throw bad(`options must be an object, got ${describe(options)}`);
    rejectUnknownKeys(options, ["olderThan", "machine", "limit"], "prune", (m) => new ValidationError(m));
    const olderThanMs =
      options.olderThan === undefined ? undefined : checkRetention(options.olderThan, "olderThan", bad);
    const machine = options.machine === undefined ? undefined : checkName(options.machine, "machine", bad);
    const limit = options.limit;
    if (limit !== undefined && (typeof limit !== "number" || !Number.isSafeInteger(limit) || limit < 1)) {
      throw bad(`limit must be a positive integer, got ${describe(limit)}`);
    }
    return this.run({ olderThanMs, machine, limit: limit ?? Infinity, rotate: false });
  }

  private async run(options: {
    olderThanMs?: number;
    machine?: string;
    limit: number;
    rotate: boolean;
  }): Promise<PruneResult> {
    const { pool } = this.options;
    const total: PruneResult = { instances: 0, transitions: 0, signals: 0 };
    let machines: string[];
    if (options.machine !== undefined) {
      machines = [options.machine];
    } else {
      machines = (await this.q.machines(pool)).rows.map((r) => r.machine);
      if (options.rotate && machines.length > 0) {
        const start = this.rotation++ % machines.length;
        machines = [...machines.slice(start), ...machines.slice(0, start)];
      }
    }
    const recorded = options.olderThanMs === undefined ? await this.recordedRetentions() : new Map<string, number>();
    for (const machine of machines) {
      const retentionMs =
        options.olderThanMs ??
        this.options.machines.get(machine)?.retentionMs ??
        recorded.get(machine) ??
        this.options.retentionMs;
      let after: PruneCursor | null = null;
      while (total.instances < options.limit) {
        const batch = Math.min(GC_BATCH, options.limit - total.instances);
        // Typed: `after` is read from the row the loop before returned.
        const { rows }: pg.QueryResult<PruneBatchRow> = await this.q.pruneBatch(pool, {
          machine,
          retentionMs,
          limit: batch,
          after,
          windowMs: this.options.idempotencyWindowMs ?? 86_400_000, // the engine's default, 24 h
        });
        const row: PruneBatchRow = rows[0]!;
        total.instances += row.instances;
        total.transitions += row.transitions;
        total.signals += row.signals;
        // Fewer than asked: nothing more is due for this machine (or the rest is locked by another pruner).
        if (row.instances < batch || row.after_at === null) break;
        after = { at: row.after_at, id: row.after_id! };
      }
      if (total.instances >= options.limit) break;
    }
    if (options.machine === undefined) {
      for (;;) {
        const { rowCount } = await this.expireInbox(pool, { limit: GC_BATCH });
        total.signals += rowCount ?? 0;
        if ((rowCount ?? 0) < GC_BATCH) break;
      }
      for (;;) {
        const { rowCount } = await this.q.expireRemembered(pool, { limit: GC_BATCH });
        if ((rowCount ?? 0) < GC_BATCH) break;
      }
    }
    return total;
  }

  private async recordedRetentions(): Promise<Map<string, number>> {
    const { rows } = await this.q.retentions(this.options.pool);
    return new Map(rows.map((r) => [r.machine, r.retention_ms]));
  }
}
