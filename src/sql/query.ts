/**
 * The typed query layer: every statement the engine runs is a `Statement`, a
 * function from named arguments to typed rows, declared beside its SQL text and
 * its row type. Callers never count `$n` placeholders or cast rows: the one place
 * that knows which argument is `$3` is the statement's own `values` mapping.
 */
import type { QueryConfig, QueryResult, QueryResultRow } from "pg";
import { prepared } from "../db/prepared.js";

/** Anything that runs a query: the engine's pool, a checked-out client, a caller's transaction client. */
export interface Queryable {
  query<R extends QueryResultRow = QueryResultRow>(config: QueryConfig): Promise<QueryResult<R>>;
}

/** One SQL statement: call it with a connection and its named arguments. */
export interface Statement<Args, Row extends QueryResultRow> {
  (db: Queryable, args: Args): Promise<QueryResult<Row>>;
  /** The SQL text, exactly as sent (tests match statements by it; EXPLAIN shows it). */
  readonly text: string;
}

/** A statement without arguments. */
export interface Probe<Row extends QueryResultRow> {
  (db: Queryable): Promise<QueryResult<Row>>;
  readonly text: string;
}

export interface StatementOptions {
  /**
   * Sent as a named prepared statement (parsed and planned once per connection): for the hot
   * path's multi-CTE statements. Behind a transaction pooler the pool sends them unnamed.
   */
  prepare?: boolean;
}

/**
 * Declares a statement: `values` maps the named arguments to `$1, $2, …` in order, so that
 * mapping is written once, beside the SQL. `Row` is what one returned row holds.
 */
export function statement<Args, Row extends QueryResultRow = Record<string, never>>(
  text: string,
  values: (args: Args) => unknown[],
  options: StatementOptions = {},
): Statement<Args, Row> {
  // Async so that arguments that cannot be bound (JSON.stringify throwing) reject like the query would.
  const run = async (db: Queryable, args: Args) => {
    const bound = values(args);
    return db.query<Row>(options.prepare ? prepared(text, bound) : { text, values: bound });
  };
  return Object.assign(run, { text });
}

/** Declares a statement that takes no arguments. */
export function probe<Row extends QueryResultRow>(text: string): Probe<Row> {
  return Object.assign((db: Queryable) => db.query<Row>({ text }), { text });
}
