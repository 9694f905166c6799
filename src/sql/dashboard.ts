/**
 * The statements the dashboard runs besides the engine's own (get, history, explain) and the
 * status report's (src/sql/status.ts); `gen-durable graph` draws from `edges` too. Read-only.
 * Values are bound parameters; the validated schema is the only identifier in the text. Each is
 * bounded: by an index on a status, by a LIMIT, or (the last hour's transitions) by a time window
 * whose result the dashboard caches.
 */
import { quoteIdent } from "../names.js";
import type { Status } from "../status.js";
import { TERMINAL_SQL } from "../status.js";
import { IN_FLIGHT_SQL, LIVE_BRANCHES, machineRows, type MachineRows } from "./by-machine.js";
import { doneTransitions } from "./done-transition.js";
import { INSTANCE_COLUMNS, type InstanceRow } from "./instances.js";
import type { BucketRow as StoredBucketRow } from "./flow.js";
import { probe, statement } from "./query.js";

/** The instance list's filter: each field null for "any". */
export interface InstanceFilter {
  machine: string | null;
  statuses: readonly Status[] | null;
  queue: string | null;
  /** Correlation key. */
  key: string | null;
  /** Inserted at or after. */
  from: Date | null;
  /** Inserted before. */
  to: Date | null;
}

/** The filter as $1 to $6, the order the filter text of dashboardQueries binds them in. */
const filterValues = (f: InstanceFilter) => [f.machine, f.statuses, f.queue, f.key, f.from, f.to];

/** Transitions in one minute of the last hour: all of them, and those that failed an attempt or the instance. */
export interface ThroughputRow {
  minute: Date;
  n: number;
  failures: number;
}

/** A stored rate-limit bucket as the dashboard shows it: also when it will be full again. */
export interface BucketRow extends StoredBucketRow {
  full_at: Date;
}

/** A signal in an instance's mailbox. */
export interface MailboxRow {
  id: string;
  event: string;
  payload: unknown;
  dedup_key: string | null;
  inserted_at: Date;
  /** null: pending. */
  consumed_at: Date | null;
}

/** A signal kept for a correlation key with no live instance. */
export interface InboxRow {
  id: string;
  event: string;
  payload: unknown;
  dedup_key: string | null;
  inserted_at: Date;
  expires_at: Date | null;
}

/** An instance as the family tree shows it. */
export interface TreeRow {
  id: string;
  machine: string;
  status: Status;
  step: string;
  parent_id: string | null;
}

/** One recorded edge of a machine's graph: (from step, to step, outcome) with its count, median and errors. */
export interface EdgeRow {
  from_step: string | null;
  to_step: string | null;
  outcome: string;
  n: number;
  p50_ms: number | null;
  errors: number;
}

/** Live instances of a machine at one step, in one status. */
export interface LiveStepRow {
  step: string;
  status: Status;
  n: number;
}

export function dashboardQueries(schema: string) {
  const s = quoteIdent(schema);
  /**
   * The instance-list filter ($1 to $6, over the branches of by-machine.ts), shared by the page,
   * its count and the bulk actions so the three agree; `where` adds to it.
   */
  const filtered = (columns: string, where: string, order: NonNullable<MachineRows["order"]>) =>
    machineRows(s, {
      machine: "$1",
      anyWhenNull: true,
      statuses: "$2::text[]",
      columns,
      where: `($2::text[] is null or status = any($2)) and ($3::text is null or queue = $3)
        and ($4::text is null or correlation_key = $4)
        and ($5::timestamptz is null or inserted_at >= $5) and ($6::timestamptz is null or inserted_at < $6)
        and ${where}`,
      order,
    });
  return {
    /**
     * Transitions per minute over the last hour: all of them, and those that failed an attempt or
     * the instance. The dones kept in instance rows are found per machine on instances_gc (a
     * loose index scan lists the machines with terminal rows), so the hour costs what it holds.
     */
    throughput: probe<ThroughputRow>(`
      with recursive machines as (
        (select machine from ${s}.instances where status in ${TERMINAL_SQL} order by machine limit 1)
        union all
        select (select i.machine from ${s}.instances i
                where i.status in ${TERMINAL_SQL} and i.machine > m.machine order by i.machine limit 1)
        from machines m where m.machine is not null
      ),
      recent as (
        select at, outcome from ${s}.transitions where at > now() - interval '1 hour'
        union all
        select d.at, d.outcome from machines m cross join lateral (${doneTransitions(
          s,
          `i.machine = m.machine and i.status in ${TERMINAL_SQL} and i.updated_at > now() - interval '1 hour'`,
        )}) d
      )
      select date_trunc('minute', at) as minute, count(*)::int as n,
             count(*) filter (where outcome in ('error', 'failed', 'lease_expired'))::int as failures
      from recent group by 1 order by 1`),

    /** Stored rate-limit buckets (a bucket with no row is full). */
    buckets: statement<{ limit: number }, BucketRow>(
      `
      select name, partition, tokens, updated_at, line_end, full_at, now() as now
      from ${s}.rate_limit_buckets order by name, partition limit $1`,
      (a) => [a.limit],
    ),

    /** A page of the instance list, newest first, before id `before` (the keyset cursor). */
    list: statement<{ filter: InstanceFilter; before: string | null; limit: number }, InstanceRow>(
      `
      select ${INSTANCE_COLUMNS} from (
      ${filtered(INSTANCE_COLUMNS, "($7::bigint is null or id < $7)", { by: "id desc", limit: "$8" })}
      ) i
      order by id desc limit $8`,
      (a) => [...filterValues(a.filter), a.before, a.limit],
    ),

    /**
     * How many instances match the filter, counted up to `limit` (a confirmation states it; past the cap it says
     * "at least").
     */
    count: statement<{ filter: InstanceFilter; limit: number }, { n: number }>(
      `select count(*)::int as n from (
        select 1 from (${filtered("id", "true", { by: "id desc", limit: "$7" })}) i limit $7) m`,
      (a) => [...filterValues(a.filter), a.limit],
    ),

    /**
     * Ids matching the filter (ordered by the bigint column, not its text alias), newest first, before id `before`,
     * at most `limit`: the bulk actions walk them in batches.
     */
    ids: statement<{ filter: InstanceFilter; before: string | null; limit: number }, { id: string }>(
      `
      select i.id::text as id from (
      ${filtered("id", "($7::bigint is null or id < $7)", { by: "id desc", limit: "$8" })}
      ) i
      order by i.id desc limit $8`,
      (a) => [...filterValues(a.filter), a.before, a.limit],
    ),

    /** The mailbox of an instance: pending and consumed signals, newest first. */
    mailbox: statement<{ id: string; limit: number }, MailboxRow>(
      `
      select id::text as id, event, payload, dedup_key, inserted_at, consumed_at
      from ${s}.signals s where instance_id = $1 order by s.id desc limit $2`,
      (a) => [a.id, a.limit],
    ),

    /** Signals kept for a correlation key with no live instance (its inbox). */
    inbox: statement<{ correlationKey: string; limit: number }, InboxRow>(
      `
      select id::text as id, event, payload, dedup_key, inserted_at, expires_at
      from ${s}.signals s where instance_id is null and correlation_key = $1 order by s.id desc limit $2`,
      (a) => [a.correlationKey, a.limit],
    ),

    /** The children of the instances `parents` (instances_parent), oldest first. */
    children: statement<{ parents: readonly string[]; limit: number }, TreeRow>(
      `
      select id::text as id, machine, status, step, parent_id::text as parent_id
      from ${s}.instances i where i.parent_id = any($1::bigint[]) order by i.parent_id, i.id limit $2`,
      (a) => [a.parents, a.limit],
    ),

    /** One instance's parent link, for walking up to the root. */
    parentOf: statement<{ id: string }, TreeRow>(
      `select id::text as id, machine, status, step, parent_id::text as parent_id
      from ${s}.instances where id = $1`,
      (a) => [a.id],
    ),

    /**
     * The machines that have instances, and those the engines define: a loose index scan of
     * instances_machine (one probe per machine) for the rows that stay put, the running rows
     * (instances_lease), and the machines every engine records when it starts. A machine whose
     * only rows are queued, and that no engine defines, shows once one of them has run.
     */
    machines: statement<{ limit: number }, { machine: string }>(
      `
      with recursive m as (
        (select machine from ${s}.instances where status not in ${IN_FLIGHT_SQL} order by machine limit 1)
        union all
        select (select i.machine from ${s}.instances i
                where i.status not in ${IN_FLIGHT_SQL} and i.machine > m.machine order by i.machine limit 1)
        from m where m.machine is not null
      )
      select machine from m where machine is not null
      union select machine from ${s}.instances where status = 'running'
      union select name from ${s}.machines
      order by machine limit $1`,
      (a) => [a.limit],
    ),

    /**
     * A machine's recorded edges over the last `windowS` seconds: count, median duration and how many carried an
     * error, per (from step, to step, outcome). Instances of the machine through the branches of
     * by-machine.ts, their transitions by transitions_instance; the dones kept in instance rows by
     * instances_gc.
     */
    edges: statement<{ machine: string; windowS: number }, EdgeRow>(
      `
      with recorded as (
        select t.from_step, t.to_step, t.outcome, t.duration_ms, t.error
        from (${machineRows(s, { machine: "$1", columns: "id", where: "true" })}) i
        join ${s}.transitions t on t.instance_id = i.id
        where t.at > now() - $2::float8 * interval '1 second'
        union all
        select d.from_step, d.to_step, d.outcome, d.duration_ms, d.error from (${doneTransitions(
          s,
          `i.machine = $1 and i.status in ${TERMINAL_SQL} and i.updated_at > now() - $2::float8 * interval '1 second'`,
        )}) d
      )
      select t.from_step, t.to_step, t.outcome, count(*)::int as n,
             percentile_cont(0.5) within group (order by t.duration_ms) as p50_ms,
             count(*) filter (where t.error is not null)::int as errors
      from recorded t
      group by 1, 2, 3
      order by 4 desc
      limit 500`,
      (a) => [a.machine, a.windowS],
    ),

    /**
     * Steps where the machine's live instances are now, with counts (for the graph's node badges):
     * one branch per live status, each read through its status's index (O(live rows), however many
     * finished rows the machine has).
     */
    liveSteps: statement<{ machine: string }, LiveStepRow>(
      `
      select step, status, count(*)::int as n from (
        ${LIVE_BRANCHES.map((live) => `select step, status from ${s}.instances where ${live} and machine = $1`).join(
          "\n        union all ",
        )}
      ) i
      group by 1, 2`,
      (a) => [a.machine],
    ),
  };
}

export type DashboardQueries = ReturnType<typeof dashboardQueries>;
