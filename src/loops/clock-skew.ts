/**
 * The node's clock against the database's. Nothing the engine decides depends on the node's clock:
 * leases, due times (delays, backoff, await deadlines), cron slots and retention are all compared
 * with the database's now(). But step code and callers do read the node's clock (a `runAt` computed
 * from `Date.now()`, timestamps written into state), and a node whose clock is minutes off usually
 * has other trouble (NTP down, a VM resumed from a snapshot). So every heartbeat (at start, then every
 * third of a lease) compares the two and warns — an `engine:warning` with `kind: "clock_skew"` and a
 * `warn` log line — when they differ by more than CLOCK_SKEW_WARN_MS: once, then every 15 minutes
 * while it holds, and again at once if it comes back after it went.
 */
import type { TypedEmitter } from "../events.js";
import type { Logger } from "../logger.js";
import type { EngineClock } from "../runtime/clock.js";

/** A difference between the node's clock and the database's that is worth a warning. */
export const CLOCK_SKEW_WARN_MS = 5_000;
const REPEAT_MS = 15 * 60_000;

export class ClockWatch {
  /** Database clock minus node clock, at the last reading (ms); 0 before the first. */
  offsetMs = 0;
  private lastSaid: number | undefined;

  constructor(
    private readonly o: {
      events: TypedEmitter;
      logger: Logger;
      node: string;
      thresholdMs?: number;
      /** Given every reading: the engine's clock (ctx.now(), wake-ups at a database time) reckons from them. */
      clock?: Pick<EngineClock, "observe">;
    },
  ) {}

  /**
   * One reading: the database's clock (ms since the epoch) read by a statement sent at
   * `localBefore` whose reply came at `localAfter` (node clock). Assumes the middle of the
   * round trip, so a slow round trip blurs the reading by half its length at most.
   */
  observe(databaseMs: number, localBefore: number, localAfter: number): void {
    if (!Number.isFinite(databaseMs)) return;
    this.offsetMs = databaseMs - (localBefore + localAfter) / 2;
    this.o.clock?.observe(databaseMs, localBefore, localAfter);
    const threshold = this.o.thresholdMs ?? CLOCK_SKEW_WARN_MS;
    const roundTrip = localAfter - localBefore;
    if (Math.abs(this.offsetMs) <= threshold + roundTrip / 2) {
      this.lastSaid = undefined;
      return;
    }
    if (this.lastSaid !== undefined && localAfter - this.lastSaid < REPEAT_MS && localAfter >= this.lastSaid) return;
    this.lastSaid = localAfter;
    const skewMs = Math.round(-this.offsetMs);
    const message =
      `the clock of node ${this.o.node} is ${Math.abs(skewMs / 1000).toFixed(1)} s ` +
      `${skewMs > 0 ? "ahead of" : "behind"} the database's. ` +
      "Leases, due times and cron slots follow the database's clock and are not affected, " +
      "but Date.now() in step code " +
      "and any runAt computed from it are off by as much: fix the node's time synchronisation (see docs/operations.md)";
    this.o.events.emit("engine:warning", { kind: "clock_skew", skewMs, message });
    this.o.logger.warn({ kind: "clock_skew", skewMs }, `gen-durable: ${message}`);
  }
}
