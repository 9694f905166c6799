/**
 * The queries the dashboard runs besides the engine's own (get, history, explain,
 * and the `status` counts it shares with `gen-durable status`). Read-only. Values
 * are bound parameters; the validated schema is the only identifier in the text.
 * Each is bounded: by an index on a status, by a LIMIT, or (the last hour's
 * transitions) by a time window whose result the server caches.
 */
import { quoteIdent } from "../names.js";
import { INSTANCE_COLUMNS } from "../sql/instances.js";
import { TERMINAL_SQL } from "../status.js";

export function dashboardQueries(schema: string) {
  const s = quoteIdent(schema);
  /**
   * The instance-list filter, shared by the page, its count and the bulk actions so the three agree:
   * $1 machine, $2 statuses, $3 queue, $4 correlation key, $5 inserted from, $6 inserted before.
   */
  const filter = `($1::text is null or machine = $1) and ($2::text[] is null or status = any($2))
        and ($3::text is null or queue = $3) and ($4::text is null or correlation_key = $4)
        and ($5::timestamptz is null or inserted_at >= $5) and ($6::timestamptz is null or inserted_at < $6)`;
  return {
    /** Transitions per minute over the last hour: all of them, and those that failed an attempt or the instance. */
    throughput: `
      select date_trunc('minute', at) as minute, count(*)::int as n,
             count(*) filter (where outcome in ('error', 'failed', 'lease_expired'))::int as failures
      from ${s}.transitions where at > now() - interval '1 hour'
      group by 1 order by 1`,

    /** Stored rate-limit buckets (a bucket with no row is full). */
    buckets: `
      select name, partition, tokens, updated_at, line_end, full_at, now() as now
      from ${s}.rate_limit_buckets order by name, partition limit $1`,

    /** A page of the instance list, newest first, before id $7 (the keyset cursor); $8 rows. */
    list: `
      select ${INSTANCE_COLUMNS} from ${s}.instances
      where ${filter} and ($7::bigint is null or id < $7)
      order by id desc limit $8`,

    /**
     * How many instances match the filter, counted up to $7 (a confirmation states it; past the cap it says
     * "at least").
     */
    count: `select count(*)::int as n from (select 1 from ${s}.instances where ${filter} limit $7) m`,

    /**
     * Ids matching the filter (ordered by the bigint column, not its text alias), newest first, before id $7, at
     * most $8: the bulk actions walk them in batches.
     */
    ids: `
      select i.id::text as id from ${s}.instances i
      where ${filter} and ($7::bigint is null or i.id < $7)
      order by i.id desc limit $8`,

    /** The mailbox of an instance: pending and consumed signals, newest first. */
    mailbox: `
      select id::text as id, event, payload, dedup_key, inserted_at, consumed_at
      from ${s}.signals s where instance_id = $1 order by s.id desc limit $2`,

    /** Signals kept for a correlation key with no live instance (its inbox). */
    inbox: `
      select id::text as id, event, payload, dedup_key, inserted_at, expires_at
      from ${s}.signals s where instance_id is null and correlation_key = $1 order by s.id desc limit $2`,

    /** The children of an instance (instances_parent), oldest first. */
    children: `
      select id::text as id, machine, status, step, parent_id::text as parent_id
      from ${s}.instances i where i.parent_id = any($1::bigint[]) order by i.parent_id, i.id limit $2`,

    /** One instance's parent link, for walking up to the root. */
    parentOf: `select id::text as id, machine, status, step, parent_id::text as parent_id
      from ${s}.instances where id = $1`,

    /** The machines that have instances (one index probe per machine: a loose index scan on instances_machine). */
    machines: `
      with recursive m as (
        (select machine from ${s}.instances order by machine limit 1)
        union all
        select (select i.machine from ${s}.instances i where i.machine > m.machine order by i.machine limit 1)
        from m where m.machine is not null
      )
      select machine from m where machine is not null limit $1`,

    /**
     * A machine's recorded edges over the last $2 seconds: count, median duration and how many carried an
     * error, per (from step, to step, outcome). Instances of the machine by instances_machine, their
     * transitions by transitions_instance.
     */
    edges: `
      select t.from_step, t.to_step, t.outcome, count(*)::int as n,
             percentile_cont(0.5) within group (order by t.duration_ms) as p50_ms,
             count(*) filter (where t.error is not null)::int as errors
      from ${s}.instances i join ${s}.transitions t on t.instance_id = i.id
      where i.machine = $1 and t.at > now() - $2::float8 * interval '1 second'
      group by 1, 2, 3
      order by 4 desc
      limit 500`,

    /** Steps where the machine's live instances are now, with counts (for the graph's node badges). */
    liveSteps: `
      select step, status, count(*)::int as n from ${s}.instances
      where machine = $1 and status not in ${TERMINAL_SQL}
      group by 1, 2`,
  };
}

export type DashboardQueries = ReturnType<typeof dashboardQueries>;
