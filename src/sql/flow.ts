/**
 * Flow control outside the claim query: rate-limit buckets, queue pause, and
 * the registry of started nodes (for explain and `status`).
 */
import { quoteIdent } from "../names.js";

export function flowQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /**
     * take_tokens(bucket, partition, capacity, perSecond, weights[], lines[]) → (taken, balance, wait_ms) per draw, in
     * order.
     */
    takeTokens: `select taken, balance, wait_ms from ${s}.take_tokens($1, $2, $3, $4, $5::float8[], $6::text[])`,

    /** Stored buckets (of limit $1, or all), with the database time to refill them from. */
    buckets: `
      select name, partition, tokens, updated_at, line_end, clock_timestamp() as now from ${s}.rate_limit_buckets
      where $1::text is null or name = $1
      order by name, partition
      limit $2`,

    setPaused: `
      insert into ${s}.queues (name, paused) values ($1, $2)
      on conflict (name) do update set paused = excluded.paused, updated_at = now()`,

    pausedQueues: `select name from ${s}.queues where paused and ($1::text is null or name = $1)`,

    /** Registers (or refreshes) this node: its id, machines, queues and lease. */
    heartbeat: `
      insert into ${s}.nodes (id, machines, queues, lease_ms) values ($1, $2, $3, $4)
      on conflict (id) do update set machines = excluded.machines, queues = excluded.queues,
        lease_ms = excluded.lease_ms, heartbeat_at = now()
      returning (extract(epoch from clock_timestamp()) * 1000)::float8 as database_ms`,

    unregister: `delete from ${s}.nodes where id = $1`,

    /** Forgets nodes silent for ten leases; live ones refresh every third of a lease. */
    forgetDeadNodes: `delete from ${s}.nodes where heartbeat_at + lease_ms * 10 * interval '1 millisecond' < now()`,

    /** Live nodes that run machine $1 on queue $2. */
    nodesRunning: `
      select count(*)::int as n from ${s}.nodes
      where $1 = any(machines) and $2 = any(queues) and heartbeat_at + lease_ms * interval '1 millisecond' > now()`,

    /** Key rows with no runnable or running instance left: nothing to coordinate. */
    /**
     * Keys still held by a cancelled step whose lease expired (its node died or
     * froze before the code settled), or by an instance that is gone: freed.
     * Keys a claim or commit holds right now are skipped. Returns the queues to wake.
     */
    freeCancelledHolds: `
      with stale as (
        select c.key, array(select h from unnest(c.holders) h where not exists (
          select 1 from ${s}.instances i
          where i.id = h and (i.status = 'running' or (i.status = 'cancelled' and i.lease_expires_at > now())))) as gone
        from ${s}.concurrency_keys c
        where cardinality(c.holders) > 0 and exists (select 1 from unnest(c.holders) h where not exists (
          select 1 from ${s}.instances i
          where i.id = h and (i.status = 'running' or (i.status = 'cancelled' and i.lease_expires_at > now()))))
        limit $1
        for update of c skip locked
      ),
      freed as (
        -- Only the stale holders: a claim that took a slot since this statement began added another.
        update ${s}.concurrency_keys c set holders = array(select h from unnest(c.holders) h where h <> all(x.gone))
        from stale x where c.key = x.key and cardinality(x.gone) > 0
        returning c.queue, c.run_at
      )
      select distinct queue from freed where queue is not null and run_at is not null`,

    forgetIdleKeys: `
      delete from ${s}.concurrency_keys c
      where c.key in (select key from ${s}.concurrency_keys where cardinality(holders) = 0 and run_at is null
                      limit $1 for update skip locked)
        and not exists (select 1 from ${s}.instances i
                        where i.concurrency_key = c.key and i.status in ('runnable', 'running'))`,

    /**
     * Buckets full for a minute with nobody in line, up to $1: the same as no
     * row (a bucket is created full on its next draw), so per-partition buckets
     * do not pile up. Rows a draw holds are skipped.
     */
    forgetIdleBuckets: `
      delete from ${s}.rate_limit_buckets b using (
        select name, partition from ${s}.rate_limit_buckets
        where full_at < now() - interval '1 minute' and (line_end is null or line_end < now())
        limit $1 for update skip locked
      ) idle
      where b.name = idle.name and b.partition = idle.partition`,
  };
}

export type FlowQueries = ReturnType<typeof flowQueries>;
