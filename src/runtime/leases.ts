/**
 * The leases this node holds: one entry per running step. The heartbeat renews
 * them all in one statement; a lease found lost aborts its step's abortSignal
 * (its commit would be fenced anyway).
 *
 * Renewals and releases run on a connection of their own (openSidePool), never
 * on the pool the steps use: a node whose steps hold every pooled connection
 * must still keep their leases, or they expire under a live node and run twice
 * (test/chaos/faults.test.ts, "a pool smaller than the concurrency"). The
 * connection is opened on first use, so a
 * pure client opens none; a node with queues holds one connection more than its
 * pool (two with the LISTEN connection).
 */
import type pg from "pg";
import { openSidePool } from "../db/pool.js";
import { LeaseLostError } from "../errors.js";
import type { ClaimQueries } from "../sql/claims.js";

export interface Held {
  token: string;
  queue: string;
  controller: AbortController;
}

interface StartRequest {
  id: string;
  token: string;
  resolve: (attempt: number | null) => void;
  reject: (error: unknown) => void;
}

export class Leases {
  readonly held = new Map<string, Held>();
  /** Rows claimed ahead whose steps are starting, to be charged in the next statement. */
  private starting: StartRequest[] = [];
  private startFlushing = false;
  /** The dedicated connection; `pool` itself when the pool does not say how it connects. */
  private side: pg.Pool | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly q: ClaimQueries,
    private readonly leaseMs: number,
  ) {}

  add(id: string, held: Held): void {
    // A new claim of the same instance supersedes an attempt still running here.
    const previous = this.held.get(id);
    if (previous && previous.token !== held.token) previous.controller.abort(new LeaseLostError(id));
    this.held.set(id, held);
  }

  /** Forgets the lease of this claim only: a newer claim of the same instance keeps its own. */
  delete(id: string, token: string): void {
    if (this.held.get(id)?.token === token) this.held.delete(id);
  }

  /**
   * Charges the attempt of a row claimed ahead, now that its step starts; resolves
   * with the attempt number, or null when the claim is gone (the step must not
   * run). The starts of one event-loop turn share one statement, on the lease
   * connection so that busy step connections never delay a start.
   */
  start(id: string, token: string): Promise<number | null> {
    return new Promise((resolve, reject) => {
      this.starting.push({ id, token, resolve, reject });
      if (!this.startFlushing) {
        this.startFlushing = true;
        setImmediate(() => void this.flushStarts());
      }
    });
  }

  private async flushStarts(): Promise<void> {
    const batch = this.starting;
    this.starting = [];
    try {
      const { rows } = await this.q.start(this.connection(), { claims: batch });
      const attempts = new Map(rows.map((r) => [r.id, r.attempt]));
      for (const r of batch) r.resolve(attempts.get(r.id) ?? null);
    } catch (error) {
      for (const r of batch) r.reject(error);
    } finally {
      if (this.starting.length > 0) setImmediate(() => void this.flushStarts());
      else this.startFlushing = false;
    }
  }

  /** Renews every held lease; returns how many were renewed. */
  async renew(): Promise<number> {
    if (this.held.size === 0) return 0;
    const entries = [...this.held];
    const claims = entries.map(([id, h]) => ({ id, token: h.token }));
    const { rows } = await this.q.renew(this.connection(), { claims, leaseMs: this.leaseMs });
    const tokens = new Map(entries.map(([id, h]) => [id, h.token]));
    let renewed = 0;
    for (const row of rows) {
      if (row.held) {
        renewed++;
        continue;
      }
      // Abort only if the same claim is still running here (not a newer claim of the same id).
      const held = this.held.get(row.id);
      if (held && held.token === tokens.get(row.id)) held.controller.abort(new LeaseLostError(row.id));
    }
    return renewed;
  }

  /**
   * Gives every held lease back (graceful stop); returns the queues that got
   * work back. The rows are released before their steps are aborted: an
   * aborted step records a failed attempt, and if that write landed first the
   * instance would come back with an attempt counted and after a backoff,
   * instead of at once with its attempt refunded. Released first, the failure
   * write is fenced and discarded. The steps are aborted even if the release
   * fails (the database is gone): their leases then expire and the reaper
   * hands them out.
   */
  async releaseAll(reason: Error): Promise<string[]> {
    if (this.held.size === 0) return [];
    const entries = [...this.held];
    try {
      const claims = entries.map(([id, h]) => ({ id, token: h.token }));
      const { rows } = await this.q.release(this.connection(), { claims });
      return [...new Set(rows.map((r) => r.queue))];
    } finally {
      for (const [, held] of entries) held.controller.abort(reason);
    }
  }

  /** Gives one claimed row back at once (runnable now, attempt refunded); returns its queue, if released. */
  async release(id: string, token: string): Promise<string[]> {
    const { rows } = await this.q.release(this.connection(), { claims: [{ id, token }] });
    return rows.map((r) => r.queue);
  }

  /**
   * Runs a statement on the dedicated connection: for other small writes that
   * must not queue behind step work either (the node's heartbeat row).
   */
  async query<R extends pg.QueryResultRow = pg.QueryResultRow>(query: pg.QueryConfig): Promise<pg.QueryResult<R>> {
    return this.connection().query<R>(query);
  }

  /** Closes the dedicated connection (engine stop, after the last renewal and release). */
  async close(): Promise<void> {
    const side = this.side;
    this.side = undefined;
    if (side && side !== this.pool) await side.end().catch(() => {});
  }

  private connection(): pg.Pool {
    // One connection: renewals are one statement every third of a lease, releases one per stop.
    this.side ??= openSidePool(this.pool, "lease", 1, this.leaseMs) ?? this.pool;
    return this.side;
  }
}
