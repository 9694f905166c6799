/**
 * The engine's clock: database time, read without a round trip. A node measures once how far the
 * database's clock is from its own (offsetMs) and reads the schema's skew (skewMs: zero unless a
 * test moved time with advanceTime). ctx.now() is Date.now() plus both; a deadline the step gives
 * as a date (ctx.await's until, ctx.next's runAt) is stored less the skew, in database time, so it
 * comes due when the engine's clock reaches it.
 */
import type pg from "pg";
import { clockQueries } from "../sql/clock.js";

export class EngineClock {
  /** How far the database's clock is ahead of this process's. */
  offsetMs = 0;
  /** How far the engine's clock is ahead of the database's (advanceTime adds to it). */
  skewMs = 0;

  now(): Date {
    return new Date(Date.now() + this.offsetMs + this.skewMs);
  }

  /** An engine time as the database time to store. */
  toDatabase(at: Date): Date {
    return this.skewMs === 0 ? at : new Date(at.getTime() - this.skewMs);
  }

  /** Reads the database's clock and the schema's skew. */
  async sync(pool: pg.Pool, schema: string): Promise<void> {
    const before = Date.now();
    const { rows } = await clockQueries(schema).read(pool);
    const local = (before + Date.now()) / 2;
    this.offsetMs = Number(rows[0]!.db) - local;
    this.skewMs = Number(rows[0]!.skew ?? 0);
  }
}

/** The clock of a step run outside an engine (runStep): this process's, unless the test sets it. */
export const SYSTEM_CLOCK: EngineClock = new EngineClock();
