/**
 * Queue depth for the `gen_durable.queue.depth` gauge: live instances per
 * queue and status, read with one statement and cached for `intervalMs`, so a
 * metrics pipeline collecting every second still costs at most one query per
 * interval per node. It is only ever called from an observable-gauge callback,
 * which runs on collection: with no MeterProvider registered, never.
 *
 * Cost: the query is `gen-durable status`'s (src/sql/status.ts): each branch
 * reads one status only, through that status's partial index, so terminal
 * rows — the bulk of the table until GC prunes them — are never read.
 * Measured on Postgres 15 with 500,000 rows, 99.8% of them terminal: 1.5 ms
 * (a sequential scan of the table took ~70 ms per status). The statement runs under a
 * 2-second statement_timeout so a slow sample can never hold a pool
 * connection for long; a sample that fails is reported and skipped.
 */
import type pg from "pg";
import { withTransaction } from "../db/pool.js";
import { statusQueries } from "../sql/status.js";

/** Non-terminal statuses, each reported per queue. */
export const DEPTH_STATUSES = ["runnable", "running", "awaiting", "joining"] as const;
export type DepthStatus = (typeof DEPTH_STATUSES)[number];

export interface DepthRow {
  queue: string;
  status: DepthStatus;
  count: number;
}

/** Longest a sample may run. */
const STATEMENT_TIMEOUT_MS = 2000;

export class QueueDepthSampler {
  private readonly text: string;
  private last: { at: number; rows: DepthRow[] } | undefined;
  private pending: Promise<DepthRow[]> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    schema: string,
    private readonly intervalMs: number,
    /**
     * Queues this node runs: always reported, with 0 when they hold nothing, so a drained queue reads 0 rather than
     * vanishing.
     */
    private readonly knownQueues: readonly string[],
    private readonly onError: (error: unknown) => void,
  ) {
    this.text = statusQueries(schema).depth;
  }

  /** The depth per queue and status: cached if younger than the interval; concurrent callers share one query. */
  async read(): Promise<DepthRow[]> {
    if (this.last && performance.now() - this.last.at < this.intervalMs) return this.last.rows;
    this.pending ??= this.query().finally(() => (this.pending = undefined));
    return this.pending;
  }

  private async query(): Promise<DepthRow[]> {
    try {
      const { rows } = await withTransaction(this.pool, async (client) => {
        await client.query(`set local statement_timeout = ${STATEMENT_TIMEOUT_MS}`);
        return client.query<DepthRow>(this.text);
      });
      const out = new Map<string, DepthRow>();
      for (const queue of this.knownQueues)
        for (const status of DEPTH_STATUSES) out.set(`${queue}\0${status}`, { queue, status, count: 0 });
      for (const row of rows)
        out.set(`${row.queue}\0${row.status}`, { queue: row.queue, status: row.status, count: Number(row.count) });
      const result = [...out.values()];
      this.last = { at: performance.now(), rows: result };
      return result;
    } catch (error) {
      this.onError(error);
      // Nothing observed for this collection: a gap in the series, not a made-up value.
      return [];
    }
  }
}
