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
import type { Claim, ClaimQueries } from "../sql/claims.js";
import type { StepAbort } from "./step-abort.js";

export interface Held {
  token: string;
  queue: string;
  attempt: StepAbort;
}

/**
 * How long a step taken from the claim-ahead buffer runs before its start is marked in the
 * database. A step that settles sooner has its attempt counted by its outcome's commit instead,
 * so short steps start and finish without a statement of their own. A node that dies within this
 * window leaves the row looking unstarted; the reaper bounds how often that is forgiven
 * (MAX_UNCHARGED_RETURNS in sql/claims.ts).
 */
export const START_MARK_DELAY_MS = 50;

/** A step claimed ahead that has started; its start is marked once `dueAt` passes, unless it settles first. */
interface PendingMark {
  token: string;
  dueAt: number;
}

export class Leases {
  readonly held = new Map<string, Held>();
  /** Steps claimed ahead that have started and whose start is not marked yet, by instance id. */
  private readonly unmarked = new Map<string, PendingMark>();
  private markTimer: NodeJS.Timeout | undefined;
  private marking = false;
  private closed = false;
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
    if (previous && previous.token !== held.token) previous.attempt.abort(new LeaseLostError(id));
    this.held.set(id, held);
  }

  /** Forgets the lease of this claim only: a newer claim of the same instance keeps its own. */
  delete(id: string, token: string): void {
    if (this.held.get(id)?.token === token) this.held.delete(id);
  }

  /**
   * A step claimed ahead has started (its code runs now, without waiting for the database). Its
   * attempt is counted by its outcome's commit; if it is still running START_MARK_DELAY_MS from
   * now, a start mark counts it first, so that a crash from then on charges it. The marks due
   * together share one statement, on the lease connection, like renewals.
   */
  markStarted(id: string, token: string): void {
    this.closed = false; // a restarted engine
    this.queueMark(id, token);
  }

  private queueMark(id: string, token: string): void {
    // Deleted first, so that the map stays in order of due time (set keeps an existing key's place).
    this.unmarked.delete(id);
    this.unmarked.set(id, { token, dueAt: performance.now() + START_MARK_DELAY_MS });
    this.scheduleMarks();
  }

  /** The step settled: its outcome's commit counts the attempt, no mark is needed any more. */
  settled(id: string, token: string): void {
    if (this.unmarked.get(id)?.token === token) this.unmarked.delete(id);
  }

  private scheduleMarks(): void {
    if (this.markTimer || this.marking || this.closed || this.unmarked.size === 0) return;
    // Entries are added in order of their due time: the first is the next due.
    const next = this.unmarked.values().next().value!.dueAt;
    this.markTimer = setTimeout(
      () => {
        this.markTimer = undefined;
        void this.flushMarks();
      },
      Math.max(0, next - performance.now()),
    );
    this.markTimer.unref();
  }

  private async flushMarks(): Promise<void> {
    const now = performance.now();
    const due: Array<{ id: string; token: string }> = [];
    for (const [id, mark] of this.unmarked) {
      if (mark.dueAt > now) break;
      due.push({ id, token: mark.token });
    }
    if (due.length === 0) return this.scheduleMarks();
    this.marking = true;
    try {
      const { rows } = await this.q.start(this.connection(), { claims: due });
      const tokens = new Map(due.map((d) => [d.id, d.token]));
      for (const [id, token] of tokens) if (this.unmarked.get(id)?.token === token) this.unmarked.delete(id);
      for (const row of rows) {
        if (!row.held) this.lost(row.id, tokens.get(row.id)!);
        // Skipped while another statement held its row: tried again unless that settled it.
        else if (!row.marked) this.queueMark(row.id, tokens.get(row.id)!);
      }
    } catch {
      // Kept for the next try (the statement is repeatable); a renewal that fails the same way
      // reports the database's trouble, and until a mark lands a crash is forgiven (see reap).
      for (const d of due) if (this.unmarked.get(d.id)?.token === d.token) this.queueMark(d.id, d.token);
    } finally {
      this.marking = false;
      this.scheduleMarks();
    }
  }

  /** The claim is gone: abort its step if it is still the one running here. */
  private lost(id: string, token: string): void {
    this.abort({ id, token }, new LeaseLostError(id));
  }

  /** Aborts the step of this claim, if it is running here; a newer claim of the instance runs on. */
  abort(claim: Claim, reason: Error): void {
    const held = this.held.get(claim.id);
    if (held && held.token === claim.token) held.attempt.abort(reason);
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
      this.lost(row.id, tokens.get(row.id)!);
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
      return await this.releaseClaims(entries.map(([id, h]) => ({ id, token: h.token })));
    } finally {
      for (const [, held] of entries) held.attempt.abort(reason);
    }
  }

  /** Gives one claimed row back at once (runnable now, attempt refunded); returns its queue, if released. */
  async release(id: string, token: string): Promise<string[]> {
    return this.releaseClaims([{ id, token }]);
  }

  /**
   * Gives rows claimed ahead back, uncharged and in their place, and forgets their leases; returns
   * the queues that got work back. Forgotten even if the release fails: their leases then expire
   * and the reaper hands them out, rather than this node renewing rows it will not run.
   */
  async giveBack(claims: readonly Claim[]): Promise<string[]> {
    try {
      return await this.releaseClaims(claims);
    } finally {
      for (const { id, token } of claims) this.delete(id, token);
    }
  }

  /** The release statement on the lease connection; the queues that got work back, each once. */
  private async releaseClaims(claims: readonly Claim[]): Promise<string[]> {
    const { rows } = await this.q.release(this.connection(), { claims });
    return [...new Set(rows.map((r) => r.queue))];
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
    this.closed = true;
    clearTimeout(this.markTimer);
    this.markTimer = undefined;
    this.unmarked.clear();
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
