/**
 * Coalesced NOTIFY for writes made outside a caller's transaction. At most one
 * NOTIFY statement is in flight per engine; queues that need waking meanwhile
 * are merged into the next one, so a burst of 10,000 inserts costs a handful
 * of notifications, not 10,000 (each NOTIFY takes a global lock at commit).
 */
import type pg from "pg";

export class Notifier {
  private readonly pending = new Set<string>();
  private inFlight = false;

  constructor(
    private readonly pool: pg.Pool,
    private readonly channel: string,
    private readonly onError: (error: unknown) => void,
  ) {}

  request(queue: string): void {
    this.pending.add(queue);
    if (!this.inFlight) void this.flush();
  }

  /** Resolves once everything requested so far has been sent. */
  async drain(): Promise<void> {
    while (this.inFlight || this.pending.size > 0) {
      if (!this.inFlight) await this.flush();
      else await new Promise((resolve) => setTimeout(resolve, 5));
    }
  }

  private async flush(): Promise<void> {
    this.inFlight = true;
    try {
      while (this.pending.size > 0) {
        const queues = [...this.pending];
        this.pending.clear();
        await this.pool
          .query("select pg_notify($1, q) from unnest($2::text[]) as q", [this.channel, queues])
          .catch((error: unknown) => this.onError(error));
      }
    } finally {
      this.inFlight = false;
    }
  }
}
