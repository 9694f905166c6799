/**
 * The one skeleton every background loop uses: a tick every `intervalMs` with
 * ±10% jitter (so nodes started together do not tick in lockstep), `trigger()`
 * to tick now, errors reported and never fatal, and `stop()` that waits for a
 * running tick. Intervals and delays may exceed Node's largest timer (a
 * pollInterval of "30d"): they go through setLongTimeout.
 */
import { setLongTimeout, type LongTimeout } from "../timers.js";

export interface LoopOptions {
  name: string;
  intervalMs: number;
  tick: () => Promise<void>;
  onError: (loop: string, error: unknown) => void;
  /** Delay before the first tick; default: a random fraction of the interval. */
  initialDelayMs?: number;
}

export class Loop {
  private timer: LongTimeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = true;
  private again = false;

  constructor(private readonly options: LoopOptions) {}

  start(): void {
    if (!this.stopped) return;
    this.stopped = false;
    this.schedule(this.options.initialDelayMs ?? Math.random() * this.options.intervalMs);
  }

  /** Ticks as soon as possible (after the running tick, if any). */
  trigger(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.schedule(0);
  }

  /** Ticks after `delayMs` unless a tick comes sooner (e.g. a deadline known to this node). */
  triggerIn(delayMs: number): void {
    if (this.stopped) return;
    setLongTimeout(() => this.trigger(), delayMs, { unref: true });
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.timer?.clear();
    this.timer = undefined;
    await this.running;
  }

  private schedule(delayMs: number): void {
    this.timer?.clear();
    this.timer = setLongTimeout(() => void this.run(), delayMs, { unref: true });
  }

  private async run(): Promise<void> {
    if (this.stopped || this.running) return;
    this.running = this.options.tick().catch((error: unknown) => this.options.onError(this.options.name, error));
    await this.running;
    this.running = undefined;
    if (this.stopped) return;
    const interval = this.options.intervalMs * (0.9 + Math.random() * 0.2);
    this.schedule(this.again ? 0 : interval);
    this.again = false;
  }
}
