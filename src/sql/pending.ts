/**
 * The probes of gen-durable/testing's drain(): due work of every kind, read in one statement so
 * that every probe sees the same snapshot.
 */
import { quoteIdent } from "../names.js";
import { TERMINAL_SQL } from "../status.js";
import { statement } from "./query.js";

/**
 * Due work, one probe per kind: the one place to extend when a feature adds
 * a new kind. $1: the engine's queues, $2: its machines, $3: its node id.
 * Each counts at most 1000 rows (enough to report; cheap on big tables).
 */
export const PENDING: ReadonlyArray<{ name: string; what: string; sql: (s: string) => string }> = [
  {
    name: "runnable",
    what: "runnable instances due now in this engine's queues",
    sql: (s) => `select 1 from ${s}.instances i
      where i.status = 'runnable' and i.run_at <= now() and i.queue = any($1::text[]) and i.machine = any($2::text[])
        and not exists (select 1 from ${s}.queues q where q.name = i.queue and q.paused)`,
  },
  {
    name: "claimed",
    what: "instances claimed by this engine",
    sql: (s) => `select 1 from ${s}.instances where status = 'running' and leased_by = $3`,
  },
  {
    name: "expiredLeases",
    what: "running instances whose lease expired (for the reaper)",
    sql: (s) => `select 1 from ${s}.instances where status = 'running' and lease_expires_at < now()`,
  },
  {
    name: "timedOut",
    what: "awaits past their timeout (for the timeouts loop)",
    sql: (s) => `select 1 from ${s}.instances where status = 'awaiting' and run_at <= now()`,
  },
  {
    name: "uncountedChildren",
    what: "finished children their parent has not counted yet (for the join sweep)",
    sql: (s) => `select 1 from ${s}.instances c
      where c.parent_id is not null and not c.join_counted and c.status in ${TERMINAL_SQL}
        and exists (select 1 from ${s}.instances p where p.id = c.parent_id)`,
  },
  {
    name: "expiredInbox",
    what: "inbox signals past signalRetention (for the reaper)",
    sql: (s) => `select 1 from ${s}.signals where instance_id is null and expires_at < now()`,
  },
];

/** The engine whose due work is probed: its queues ($1), its machines ($2) and its node id ($3). */
export interface PendingArgs {
  queues: readonly string[];
  machines: readonly string[];
  nodeId: string;
}

/** Every probe in one statement: one column per probe, named after it, counting up to 1000 rows. */
export function pendingProbe(schema: string) {
  const s = quoteIdent(schema);
  const columns = PENDING.map((p) => `(select count(*)::int from (${p.sql(s)} limit 1000) x) as "${p.name}"`);
  // One statement: every probe sees the same snapshot.
  return statement<PendingArgs, Record<string, number>>(`select ${columns.join(",\n")}`, (a) => [
    a.queues,
    a.machines,
    a.nodeId,
  ]);
}
