/**
 * The one skeleton every background loop uses: a tick every `intervalMs` with
 * ±10% jitter (so nodes started together do not tick in lockstep), `trigger()`
 * to tick now, errors reported and never fatal, and `stop()` that waits for a
 * running tick.
 */
export interface LoopOptions {
  name: string;
  intervalMs: number;
  tick: () => Promise<void>;
  onError: (loop: string, error: unknown) => void;
  /** Delay before the first tick; default: a random fraction of the interval. */
  initialDelayMs?: number;
}

export class Loop {
  private timer: NodeJS.Timeout | undefined;
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
    const timer = setTimeout(() => this.trigger(), delayMs);
    timer.unref?.();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.running;
  }

  private schedule(delayMs: number): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => void this.run(), delayMs);
    this.timer.unref?.();
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
