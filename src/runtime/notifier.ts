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
  /** Inserts and signals in flight outside a caller's transaction (see beginWrite). */
  private writes = 0;

  constructor(
    private readonly pool: pg.Pool,
    private readonly channel: string,
    private readonly onError: (error: unknown) => void,
  ) {}

  /**
   * An insert or a signal outside a caller's transaction starts; endWrite() when it is done. Returns
   * whether it may send its NOTIFY with its own commit, a round trip sooner than a NOTIFY after it:
   * when nothing else is in flight here (the caller may still decide against it). Otherwise it
   * requests one, which wakes every node for all the writes that committed meanwhile: a NOTIFY in a
   * transaction holds Postgres's notify lock through the commit's WAL flush, so concurrent writes
   * that each sent one (and this notifier's own NOTIFY) would wait for each other's flush.
   */
  beginWrite(): boolean {
    const alone = this.writes === 0 && this.inFlight === undefined && this.pending.size === 0;
    this.writes++;
    return alone;
  }

  endWrite(): void {
    this.writes--;
  }

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
