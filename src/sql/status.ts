/**
 * The statements behind the status report (src/status-report.ts: `gen-durable status`, the
 * dashboard's overview, the queue-depth gauge): counts per queue and status, paused queues,
 * started nodes. Read-only, and cheap on a big table: every count is its own branch whose WHERE
 * implies the predicate of one partial index, so it costs O(rows in that status), never O(table):
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
import { RUNNABLE_KEYED, RUNNABLE_UNKEYED } from "./by-machine.js";
import { probe, statement } from "./query.js";

/** The live statuses other than runnable: counted per queue by `live`. */
export const PARKED_STATUSES = ["running", "awaiting", "joining"] as const;
export type ParkedStatus = (typeof PARKED_STATUSES)[number];

/** Runnable rows of one queue: due now, due later, and since when the longest-waiting due row has been due. */
export interface RunnableRow {
  queue: string;
  /** bigint counts, as pg returns them (text). */
  due: string;
  scheduled: string;
  oldest_due: Date | null;
}

/** Instances of one queue in one status. */
export interface CountRow<S extends string> {
  queue: string;
  status: S;
  /** A bigint, as text. */
  n: string;
}

/** A queue with a row in the queues table (paused now, or paused once). */
export interface QueueRow {
  name: string;
  paused: boolean;
}

/** A registered node, alive while its heartbeat is younger than its lease. */
export interface NodeRow {
  id: string;
  machines: string[];
  queues: string[];
  started_at: Date;
  heartbeat_at: Date;
  lease_ms: number;
  alive: boolean;
}

export function statusQueries(schema: string) {
  const s = quoteIdent(schema);
  const count = (status: string) =>
    `select queue, '${status}'::text as status, count(*)::bigint as n
     from ${s}.instances where status = '${status}' group by queue`;
  const branches = {
    runnableUnkeyed: `select queue, run_at from ${s}.instances where ${RUNNABLE_UNKEYED}`,
    runnableKeyed: `select queue, run_at from ${s}.instances where ${RUNNABLE_KEYED}`,
    running: count("running"),
    awaiting: count("awaiting"),
    joining: count("joining"),
    failed: count("failed"),
  };
  return {
    /** Each branch on its own, for tests that check their plans. */
    branches,

    /**
     * One row per queue with runnable rows: due now, due later, and the oldest
     * due run_at (how long the longest-waiting runnable row has been due).
     */
    runnable: probe<RunnableRow>(`
      select queue,
             count(*) filter (where run_at <= now())::bigint as due,
             count(*) filter (where run_at > now())::bigint as scheduled,
             min(run_at) filter (where run_at <= now()) as oldest_due
      from (${branches.runnableUnkeyed} union all ${branches.runnableKeyed}) r
      group by queue`),

    /** (queue, status, n) for running, awaiting and joining: the live statuses besides runnable. */
    live: probe<CountRow<ParkedStatus>>(PARKED_STATUSES.map((status) => branches[status]).join("\nunion all\n")),

    /** (queue, 'failed', n): failed instances wait for an operator, so the report counts them; the gauge does not. */
    failed: probe<CountRow<"failed">>(branches.failed),

    queues: probe<QueueRow>(`select name, paused from ${s}.queues`),

    /**
     * Registered nodes, alive while the heartbeat is younger than the node's
     * lease; the living first. Bounded: a table of dead nodes is not a report.
     */
    nodes: statement<{ limit: number }, NodeRow>(
      `
      select id, machines, queues, started_at, heartbeat_at, lease_ms,
             heartbeat_at + lease_ms * interval '1 millisecond' > now() as alive
      from ${s}.nodes
      order by alive desc, heartbeat_at desc, id
      limit $1`,
      (a) => [a.limit],
    ),

    /** How many nodes are registered, and how many of them alive. */
    nodeCount: probe<{ alive: number; total: number }>(`
      select count(*) filter (where heartbeat_at + lease_ms * interval '1 millisecond' > now())::int as alive,
             count(*)::int as total
      from ${s}.nodes`),

    /** The database clock (the transaction's start: every age in a report is measured from it). */
    now: probe<{ now: Date }>(`select now() as now`),
  };
}

export type StatusQueries = ReturnType<typeof statusQueries>;
