/** The engine's clock (runtime/clock.ts): the database's clock, and the schema's skew (advanceTime). */
import { quoteIdent } from "../names.js";
import { probe } from "./query.js";

export function clockQueries(schema: string) {
  return {
    /** The database's clock (epoch ms; numeric, which pg returns as text) and the schema's skew in ms. */
    read: probe<{ db: string | number; skew: number | null }>(
      `select extract(epoch from clock_timestamp()) * 1000 as db,
        (select skew_ms from ${quoteIdent(schema)}.engine_clock) as skew`,
    ),
  };
}
