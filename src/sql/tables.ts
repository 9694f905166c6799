/**
 * The health of gen-durable's busiest tables, for `gen-durable status`, the
 * table gauges and the engine's vacuum warnings: live and dead tuples and the
 * last vacuum (from the statistics collector, pg_stat_all_tables), whether
 * autovacuum may run on each (the server's `autovacuum` and `track_counts`,
 * the table's `autovacuum_enabled`). Catalog reads only: cheap at any size.
 */
import { statement } from "./query.js";

/**
 * Tables rewritten by every step (instances: a claim and an outcome per step;
 * concurrency_keys and rate_limit_buckets: a row updated per keyed change and
 * per draw) or filled and emptied continuously (transitions, signals).
 */
export const HOT_TABLES = ["instances", "transitions", "signals", "concurrency_keys", "rate_limit_buckets"] as const;

/** What `tableHealth` says of one table. */
export interface TableHealthRow {
  table: string;
  live: number;
  dead: number;
  last_vacuum: Date | null;
  last_autovacuum: Date | null;
  table_autovacuum: boolean;
  server_autovacuum: boolean;
  track_counts: boolean;
  now: Date;
}

/**
 * One row per table of `tables` in `schema` (a value, not an identifier): tuples, last vacuum, whether
 * autovacuum may run on it.
 */
export const tableHealth = statement<{ schema: string; tables: readonly string[] }, TableHealthRow>(
  `
      select c.relname::text as table,
             coalesce(st.n_live_tup, 0)::float8 as live,
             coalesce(st.n_dead_tup, 0)::float8 as dead,
             st.last_vacuum, st.last_autovacuum,
             coalesce((select o.option_value::boolean from pg_options_to_table(c.reloptions) o
                       where o.option_name = 'autovacuum_enabled'), true) as table_autovacuum,
             current_setting('autovacuum')::boolean as server_autovacuum,
             current_setting('track_counts')::boolean as track_counts,
             now() as now
      from pg_class c
      join pg_namespace n on n.oid = c.relnamespace
      left join pg_stat_all_tables st on st.relid = c.oid
      where n.nspname = $1 and c.relkind = 'r' and c.relname = any($2::text[])
      order by c.relname`,
  (a) => [a.schema, a.tables],
);

/** A session holding the horizon, as `horizonHolders` reads it. */
export interface HorizonHolderRow {
  pid: number;
  application_name: string;
  usename: string;
  state: string;
  held_ms: number;
  xmin_age: number;
}

/**
 * Sessions of this database (or walsenders, which belong to none) whose snapshot holds back the
 * xmin horizon — vacuum cannot remove a row version any of them may still see — since longer than
 * `heldMs` milliseconds, oldest first: a transaction left open, a long report, a forgotten `idle in
 * transaction`. Held since the start of its transaction (of its statement outside one). A role
 * without pg_read_all_stats sees other roles' backend_xmin as null: those are not listed.
 */
export const horizonHolders = statement<{ heldMs: number }, HorizonHolderRow>(
  `
      select pid, coalesce(application_name, '') as application_name, coalesce(usename::text, '') as usename,
             coalesce(state, '') as state,
             (extract(epoch from now() - coalesce(xact_start, query_start, backend_start)) * 1000)::float8 as held_ms,
             age(backend_xmin)::float8 as xmin_age
      from pg_stat_activity
      where backend_xmin is not null and pid <> pg_backend_pid()
        and (datname = current_database() or datname is null)
        and coalesce(xact_start, query_start, backend_start) < now() - $1 * interval '1 millisecond'
      order by coalesce(xact_start, query_start, backend_start)
      limit 5`,
  (a) => [a.heldMs],
);
