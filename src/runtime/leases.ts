/**
 * The leases this node holds: one entry per running step. The heartbeat renews
 * them all in one statement; a lease found lost aborts its step's abortSignal
 * (its commit would be fenced anyway).
 */
import { prepared } from "../db/prepared.js";
import type pg from "pg";
import { LeaseLostError } from "../errors.js";
import type { ClaimQueries } from "../sql/claims.js";

export interface Held {
  token: string;
  queue: string;
  controller: AbortController;
}

export class Leases {
  readonly held = new Map<string, Held>();

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

  /** Renews every held lease; returns how many were renewed. */
  async renew(): Promise<number> {
    if (this.held.size === 0) return 0;
    const entries = [...this.held];
    const { rows } = await this.pool.query<{ id: string; held: boolean }>(
      prepared(this.q.renew, [entries.map(([id]) => id), entries.map(([, h]) => h.token), this.leaseMs]),
    );
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

  /** Gives every held lease back (graceful stop); returns the queues that got work back. */
  async releaseAll(reason: Error): Promise<string[]> {
    if (this.held.size === 0) return [];
    const entries = [...this.held];
    for (const [, held] of entries) held.controller.abort(reason);
    const { rows } = await this.pool.query<{ queue: string }>(this.q.release, [entries.map(([id]) => id), entries.map(([, h]) => h.token)]);
    return [...new Set(rows.map((r) => r.queue))];
  }
}
