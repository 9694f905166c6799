/**
 * Queries behind `gen-durable status` and the queue-depth gauge: counts per
 * queue and status, paused queues, started nodes. Read-only, and cheap on a big table: every count is
 * its own branch whose WHERE implies the predicate of one partial index, so it
 * costs O(rows in that status), never O(table):
 *   runnable, no concurrency key   instances_claim (index-only: queue, run_at)
 *   runnable, concurrency key      instances_key_runnable
 *   running                        instances_lease
 *   awaiting                       instances_await_deadline
 *   joining                        instances_joining
 *   failed                         instances_failed
 * Done and cancelled are not counted: they are the bulk of a table and nobody
 * acts on their number.
 */
import { quoteIdent } from "../names.js";

/** The statuses counted per queue besides runnable, in display order. */
export const COUNTED_STATUSES = ["running", "awaiting", "joining", "failed"] as const;

/** The live statuses other than runnable, counted by the depth gauge. */
const LIVE_PARKED = ["running", "awaiting", "joining"] as const;

export function statusQueries(schema: string) {
  const s = quoteIdent(schema);
  const count = (status: string) =>
    `select queue, '${status}'::text as status, count(*)::bigint as n
     from ${s}.instances where status = '${status}' group by queue`;
  const branches = {
    runnableUnkeyed: `select queue, run_at from ${s}.instances where status = 'runnable' and concurrency_key is null`,
    runnableKeyed: `select queue, run_at from ${s}.instances where status = 'runnable' and concurrency_key is not null`,
    ...Object.fromEntries(COUNTED_STATUSES.map((status) => [status, count(status)])),
  } as Record<"runnableUnkeyed" | "runnableKeyed" | (typeof COUNTED_STATUSES)[number], string>;
  return {
    /** Each branch on its own, for tests that check their plans. */
    branches,

    /**
     * One row per queue with runnable rows: due now, due later, and the oldest
     * due run_at (how long the longest-waiting runnable row has been due).
     */
    runnable: `
      select queue,
             count(*) filter (where run_at <= now())::bigint as due,
             count(*) filter (where run_at > now())::bigint as scheduled,
             min(run_at) filter (where run_at <= now()) as oldest_due
      from (${branches.runnableUnkeyed} union all ${branches.runnableKeyed}) r
      group by queue`,

    /** (queue, status, n) for running, awaiting, joining and failed. */
    counts: COUNTED_STATUSES.map((status) => branches[status]).join("\nunion all\n"),

    /** (queue, status, count) of the live statuses: the `gen_durable.queue.depth` gauge. */
    depth: `
      select queue, 'runnable' as status, count(*)::float8 as count
      from (${branches.runnableUnkeyed} union all ${branches.runnableKeyed}) r group by queue
      union all
      select queue, status, n::float8
      from (${LIVE_PARKED.map((status) => branches[status]).join(" union all ")}) live`,

    queues: `select name, paused from ${s}.queues`,

    /**
     * Registered nodes, alive while the heartbeat is younger than the node's
     * lease; the living first. Bounded: a table of dead nodes is not a report.
     */
    nodes: `
      select id, machines, queues, started_at, heartbeat_at, lease_ms,
             heartbeat_at + lease_ms * interval '1 millisecond' > now() as alive
      from ${s}.nodes
      order by alive desc, heartbeat_at desc, id
      limit $1`,

    nodeCount: `
      select count(*) filter (where heartbeat_at + lease_ms * interval '1 millisecond' > now())::int as alive,
             count(*)::int as total
      from ${s}.nodes`,

    now: `select now() as now`,
  };
}

export type StatusQueries = ReturnType<typeof statusQueries>;
