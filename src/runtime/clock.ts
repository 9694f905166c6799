/**
 * The engine's clock: database time, read without a round trip. A node measures how far the
 * database's clock is from its own (offsetMs) at start and at every heartbeat, and reads the
 * schema's skew (skewMs: zero unless a test moved time with advanceTime). ctx.now() is Date.now()
 * plus both; a deadline the step gives as a date (ctx.await's until, ctx.next's runAt) is stored
 * less the skew, in database time, so it comes due when the engine's clock reaches it.
 *
 * A reading is not exact: the database read its clock somewhere within the statement's round trip,
 * which a busy connection or a statement that waits on a lock stretches to any length. The offset
 * assumes the middle, so it may be off by half the round trip, either way. A wake-up for a time by
 * the database's clock (msUntil) waits out that error too: woken early, the scheduler would claim
 * nothing, and nothing would wake it again before its next poll.
 */
import type pg from "pg";
import { clockQueries } from "../sql/clock.js";

/** How fast two clocks may drift apart (100 ppm): an old reading's error grows by this much a ms. */
const DRIFT = 1e-4;
/** Readings kept to narrow the offset (one per heartbeat: a third of a lease apart). */
const KEPT = 8;
/** Node fires a timer up to a millisecond before its delay is up, by its clock's rounding. */
const TIMER_EARLY_MS = 1;

/** One reading: the offset it gives, how far off that may be, and when it was taken (performance.now()). */
interface Reading {
  offsetMs: number;
  errorMs: number;
  at: number;
}

export class EngineClock {
  /** How far the database's clock is ahead of this process's (the middle of what the readings allow). */
  offsetMs = 0;
  /** How far offsetMs may be off when the newest reading was taken (half the span the readings allow). */
  private errorMs = 0;
  /** How far the engine's clock is ahead of the database's (advanceTime adds to it). */
  skewMs = 0;
  /** Newest first; those still consistent with the newest. */
  private readings: Reading[] = [];

  now(): Date {
    return new Date(Date.now() + this.offsetMs + this.skewMs);
  }

  /** An engine time as the database time to store. */
  toDatabase(at: Date): Date {
    return this.skewMs === 0 ? at : new Date(at.getTime() - this.skewMs);
  }

  /**
   * The ms this node waits before the database's clock has surely reached `databaseMs` (epoch ms,
   * database time): the offset's error and a timer's rounding included. 0 when it has already.
   */
  msUntil(databaseMs: number): number {
    // Without a reading the clock is this process's own, taken as exact.
    const newest = this.readings[0];
    const error = newest ? this.errorMs + DRIFT * (performance.now() - newest.at) : 0;
    const wait = databaseMs - (Date.now() + this.offsetMs) + error;
    return wait > 0 ? Math.ceil(wait) + TIMER_EARLY_MS : 0;
  }

  /**
   * One reading: the database's clock (epoch ms) as read by a statement sent at `localBefore` whose
   * reply came at `localAfter` (Date.now()). The offset is what the newest reading and the older ones
   * that agree with it allow together (each widened by the drift since it was taken); an older
   * reading that disagrees — a clock stepped since — is dropped, with every reading before it.
   */
  observe(databaseMs: number, localBefore: number, localAfter: number): void {
    if (!Number.isFinite(databaseMs)) return;
    const at = performance.now();
    const reading = {
      offsetMs: databaseMs - (localBefore + localAfter) / 2,
      errorMs: Math.max(0, localAfter - localBefore) / 2,
      at,
    };
    let low = reading.offsetMs - reading.errorMs;
    let high = reading.offsetMs + reading.errorMs;
    const kept = [reading];
    for (const older of this.readings) {
      if (kept.length === KEPT) break;
      const error = older.errorMs + DRIFT * (at - older.at);
      const olderLow = older.offsetMs - error;
      const olderHigh = older.offsetMs + error;
      if (olderLow > high || olderHigh < low) break;
      low = Math.max(low, olderLow);
      high = Math.min(high, olderHigh);
      kept.push(older);
    }
    this.readings = kept;
    this.offsetMs = (low + high) / 2;
    this.errorMs = (high - low) / 2;
  }

  /** Reads the database's clock and the schema's skew. */
  async sync(pool: pg.Pool, schema: string): Promise<void> {
    const before = Date.now();
    const { rows } = await clockQueries(schema).read(pool);
    this.observe(Number(rows[0]!.db), before, Date.now());
    this.skewMs = Number(rows[0]!.skew ?? 0);
  }
}

/** The clock of a step run outside an engine (runStep): this process's, unless the test sets it. */
export const SYSTEM_CLOCK: EngineClock = new EngineClock();
