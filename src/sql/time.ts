/**
 * The statements of advanceTime (gen-durable/testing, testing/time.ts): the next timer due, the
 * tables a schema has, the clock skew, and the shift of a table's time columns. Which tables and
 * columns are shifted is testing/time.ts's (SHIFTED); the identifiers come from that list, quoted.
 */
import { quoteIdent } from "../names.js";
import { probe, statement } from "./query.js";

/** Seconds only: an interval of hours/minutes/seconds is exact, unlike days or months across DST. */
const by = (ms: number) => `make_interval(secs => ${ms / 1000})`;

/** Sets each of `columns` of `table` (quoted) to itself followed by `change` (an SQL interval expression). */
function move(table: string, columns: readonly string[], change: string) {
  return probe(`update ${table} set ${columns.map((c) => `${quoteIdent(c)} = ${quoteIdent(c)} ${change}`).join(", ")}`);
}

/** Further than any stored time is from another: 100,000 years, in hours (exact). */
const FAR = "interval '876000000 hours'";

export function timeQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /**
     * The earliest timer an engine would run (its `queues` and `machines`) that falls due strictly
     * within the next `withinMs`, in milliseconds from now, ceiled: a runnable row's run_at, or an
     * await's deadline. Null when none does.
     */
    nextTimer: statement<
      { queues: readonly string[]; machines: readonly string[]; withinMs: number },
      { ms: number | null }
    >(
      `select ceil(extract(epoch from min(run_at) - now()) * 1000)::float8 as ms from ${s}.instances
     where ((status = 'runnable' and queue = any($1::text[]) and machine = any($2::text[])) or status = 'awaiting')
       and run_at > now() and run_at < now() + $3 * interval '1 millisecond' and run_at <> 'infinity'`,
      (a) => [a.queues, a.machines, a.withinMs],
    ),

    /** The tables of the schema (by name, a value: the schema need not exist). */
    tables: statement<{ schema: string }, { table: string }>(
      `select c.relname as table from pg_class c join pg_namespace n on n.oid = c.relnamespace
            where n.nspname = $1 and c.relkind = 'r'`,
      (a) => [a.schema],
    ),

    /** The engine clock moves forward as far as the stored times move back. */
    addSkew: statement<{ ms: number }, { skew: string }>(
      `update ${s}.engine_clock set skew_ms = skew_ms + $1 returning skew_ms as skew`,
      (a) => [a.ms],
    ),

    /** Moves `columns` of `table` back by `ms`. */
    shift: (table: string, columns: readonly string[], ms: number) =>
      move(`${s}.${quoteIdent(table)}`, columns, `- ${by(ms)}`),

    /**
     * The same for a table with a unique index over a time column, in two statements. The index is
     * checked row by row during an UPDATE, so shifting ticks one minute apart by one minute would
     * collide with the next row. Moving every row far away first, then back by that plus the shift,
     * never lands a row on an unmoved one.
     */
    shiftUnique: (table: string, columns: readonly string[], ms: number) => [
      move(`${s}.${quoteIdent(table)}`, columns, `+ ${FAR}`),
      move(`${s}.${quoteIdent(table)}`, columns, `- ${FAR} - ${by(ms)}`),
    ],
  };
}
