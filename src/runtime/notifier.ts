/**
 * Coalesced NOTIFY for writes made outside a caller's transaction. At most one
 * NOTIFY statement is in flight per engine; queues that need waking meanwhile
 * are merged into the next one, so a burst of 10,000 inserts costs a handful
 * of notifications, not 10,000 (each NOTIFY takes a global lock at commit).
 */
import { notifyQueues } from "../sql/notify.js";
import type pg from "pg";

export class Notifier {
  private readonly pending = new Set<string>();
  /** The flush in progress, if any: drain() waits on it. */
  private inFlight: Promise<void> | undefined;

  constructor(
    private readonly pool: pg.Pool,
    private readonly channel: string,
    private readonly onError: (error: unknown) => void,
  ) {}

  request(queue: string): void {
    this.pending.add(queue);
    this.start();
  }

  private start(): void {
    this.inFlight ??= this.flush().finally(() => {
      this.inFlight = undefined;
      // A request that came between the flush's last check and now.
      if (this.pending.size > 0) this.start();
    });
  }

  /** Resolves once everything requested so far has been sent. */
  async drain(): Promise<void> {
    // A flush sends everything pending when it ends; a request after it ended starts another.
    while (this.inFlight) await this.inFlight;
  }

  private async flush(): Promise<void> {
    while (this.pending.size > 0) {
      const queues = [...this.pending];
      this.pending.clear();
      await notifyQueues(this.pool, { channel: this.channel, queues }).catch((error: unknown) => this.onError(error));
    }
  }
}
