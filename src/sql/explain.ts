/** The reads behind engine.explain (runtime/explain.ts): one row of facts, and the signals an await has. */
import { quoteIdent } from "../names.js";
import type { NormalizedSpec } from "../runtime/await-spec.js";
import { statement } from "./query.js";

/** What explain needs beyond the instance: lease, await, rate limit, queue, key and nodes. */
export interface ExplainRow {
  now: Date;
  leased_by: string | null;
  lease_expires_at: Date | null;
  await_spec: NormalizedSpec | null;
  rate_limited: string | null;
  paused: boolean;
  /** The instances holding the instance's concurrency key, when the key is at its limit (else null). */
  key_holders: string[] | null;
  /** How many steps of the key may run at once. */
  key_limit: number | null;
  /** Live nodes that run the instance's machine on its queue. */
  nodes: number;
}

export function explainQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /** The facts of instance `id`. */
    facts: statement<{ id: string }, ExplainRow>(
      `
      select now() as now, leased_by, lease_expires_at, await_spec, rate_limited,
        exists (select 1 from ${s}.queues q where q.name = i.queue and q.paused) as paused,
        (select k.holders::text[] from ${s}.concurrency_keys k
         where k.key = i.concurrency_key and cardinality(k.holders) >= k.max_running) as key_holders,
        (select k.max_running from ${s}.concurrency_keys k where k.key = i.concurrency_key) as key_limit,
        (select count(*)::int from ${s}.nodes n
         where i.machine = any(n.machines) and i.queue = any(n.queues)
           and n.heartbeat_at + n.lease_ms * interval '1 millisecond' > now()) as nodes
      from ${s}.instances i where id = $1`,
      (a) => [a.id],
    ),

    /** Unconsumed signals of instance `id` for `events`, counted per event. */
    arrived: statement<{ id: string; events: readonly string[] }, { event: string; n: number }>(
      `
      select event, count(*)::int as n from ${s}.signals
      where instance_id = $1 and event = any($2::text[]) and consumed_at is null group by event`,
      (a) => [a.id, a.events],
    ),
  };
}
