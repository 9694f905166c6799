/**
 * The scheduler of one queue on this node: keeps up to `concurrency` steps
 * running by claiming due rows in batches (one round trip claims as many rows
 * as there are free slots). Woken by NOTIFY, by local commits and by the poll
 * loop; after a batch of completions it claims again in one go.
 */
import { prepared } from "../db/prepared.js";
import type pg from "pg";
import type { TypedEmitter } from "../events.js";
import type { ClaimQueries } from "../sql/claims.js";
import type { ClaimedRow, Executor } from "../runtime/executor.js";

export interface QueueSchedulerOptions {
  queue: string;
  concurrency: number;
  machines: string[];
  nodeId: string;
  leaseMs: number;
  pool: pg.Pool;
  claims: ClaimQueries;
  executor: Executor;
  events: TypedEmitter;
}

export class QueueScheduler {
  private running = 0;
  private claiming = false;
  /** Set by every wake-up; cleared when a claim comes back short (nothing more is due). */
  private mayHaveMore = true;
  private stopped = true;
  private fillScheduled = false;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly timers = new Set<NodeJS.Timeout>();

  constructor(private readonly o: QueueSchedulerOptions) {}

  get active(): number {
    return this.running;
  }

  start(): void {
    this.stopped = false;
    this.wake();
  }

  /** Stops claiming; resolves when the steps in flight have settled. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const timer of this.timers) clearTimeout(timer);
    this.timers.clear();
  }

  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /** Something may be due now (or after `delayMs`). */
  wake(delayMs = 0): void {
    if (this.stopped) return;
    if (delayMs > 0) {
      const timer = setTimeout(() => {
        this.timers.delete(timer);
        this.wake();
      }, delayMs);
      timer.unref();
      this.timers.add(timer);
      return;
    }
    this.mayHaveMore = true;
    this.scheduleFill();
  }

  /** Coalesces the wake-ups of one event-loop turn into one claim. */
  private scheduleFill(): void {
    if (this.fillScheduled) return;
    this.fillScheduled = true;
    setImmediate(() => {
      this.fillScheduled = false;
      void this.fill();
    });
  }

  private async fill(): Promise<void> {
    if (this.claiming || this.stopped) return;
    this.claiming = true;
    try {
      while (!this.stopped && this.mayHaveMore && this.running < this.o.concurrency) {
        const free = this.o.concurrency - this.running;
        this.mayHaveMore = false;
        const started = performance.now();
        const { rows } = await this.o.pool.query<ClaimedRow>(
          prepared(this.o.claims.claim, [this.o.queue, this.o.machines, free, this.o.nodeId, this.o.leaseMs]),
        );
        this.o.events.emit("loop:tick", { loop: "scheduler", queue: this.o.queue, durationMs: performance.now() - started, count: rows.length });
        if (rows.length === free) this.mayHaveMore = true;
        for (const row of rows) this.launch(row);
      }
    } catch (error) {
      this.o.events.emit("engine:error", { loop: `scheduler:${this.o.queue}`, error });
      // Try again shortly rather than waiting for the next poll.
      this.mayHaveMore = true;
      this.wake(250);
    } finally {
      this.claiming = false;
    }
  }

  private launch(row: ClaimedRow): void {
    this.running++;
    const task = this.o.executor.execute(row).finally(() => {
      this.running--;
      this.inFlight.delete(task);
      if (this.mayHaveMore) this.scheduleFill();
    });
    this.inFlight.add(task);
  }
}
