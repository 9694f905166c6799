/**
 * Flow control outside the claim query: rate-limit buckets, queue pause, and
 * the registry of started nodes (for explain and `status`).
 */
import { quoteIdent } from "../names.js";
import { probe, statement } from "./query.js";

/** A draw of take_tokens: its weights and lines, one per caller, in order. */
export interface TakeTokensArgs {
  bucket: string;
  partition: string;
  capacity: number;
  perSecond: number;
  weights: readonly number[];
  /** Per caller: "join" the bucket's line when short, "retry" (its turn came), or "none" (only report). */
  lines: readonly ("join" | "retry" | "none")[];
}

/** One caller's draw: whether it took its tokens, what is left, and how long until it may draw again. */
export interface DrawRow {
  taken: boolean;
  balance: number;
  wait_ms: number;
}

/** A stored rate-limit bucket, with the database time to refill it from. */
export interface BucketRow {
  name: string;
  partition: string;
  tokens: number;
  updated_at: Date;
  /** Until when draws wait in line (null: no line). */
  line_end: Date | null;
  now: Date;
}

export function flowQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /**
     * take_tokens(bucket, partition, capacity, perSecond, weights[], lines[]) → (taken, balance, wait_ms) per draw, in
     * order.
     */
    takeTokens: statement<TakeTokensArgs, DrawRow>(
      `select taken, balance, wait_ms from ${s}.take_tokens($1, $2, $3, $4, $5::float8[], $6::text[])`,
      (a) => [a.bucket, a.partition, a.capacity, a.perSecond, a.weights, a.lines],
      { prepare: true },
    ),

    /** Stored buckets (of limit $1, or all), with the database time to refill them from. */
    buckets: statement<{ name: string | null; limit: number }, BucketRow>(
      `
      select name, partition, tokens, updated_at, line_end, clock_timestamp() as now from ${s}.rate_limit_buckets
      where $1::text is null or name = $1
      order by name, partition
      limit $2`,
      (a) => [a.name, a.limit],
    ),

    setPaused: statement<{ queue: string; paused: boolean }>(
      `
      insert into ${s}.queues (name, paused) values ($1, $2)
      on conflict (name) do update set paused = excluded.paused, updated_at = now()`,
      (a) => [a.queue, a.paused],
    ),

    pausedQueues: statement<{ queue: string | null }, { name: string }>(
      `select name from ${s}.queues where paused and ($1::text is null or name = $1)`,
      (a) => [a.queue],
    ),

    /** Registers (or refreshes) this node: its id, machines, queues and lease. */
    heartbeat: statement<
      { id: string; machines: readonly string[]; queues: readonly string[]; leaseMs: number },
      { database_ms: number }
    >(
      `
      insert into ${s}.nodes (id, machines, queues, lease_ms) values ($1, $2, $3, $4)
      on conflict (id) do update set machines = excluded.machines, queues = excluded.queues,
        lease_ms = excluded.lease_ms, heartbeat_at = now()
      returning (extract(epoch from clock_timestamp()) * 1000)::float8 as database_ms`,
      (a) => [a.id, a.machines, a.queues, a.leaseMs],
      { prepare: true },
    ),

    unregister: statement<{ id: string }>(`delete from ${s}.nodes where id = $1`, (a) => [a.id]),

    /** Forgets nodes silent for ten leases; live ones refresh every third of a lease. */
    forgetDeadNodes: probe<Record<string, never>>(
      `delete from ${s}.nodes where heartbeat_at + lease_ms * 10 * interval '1 millisecond' < now()`,
    ),

    /**
     * Keys still held by a cancelled step whose lease expired (its node died or
     * froze before the code settled), or by an instance that is gone: freed.
     * Keys a claim or commit holds right now are skipped. Returns the queues to wake.
     */
    freeCancelledHolds: statement<{ limit: number }, { queue: string }>(
      `
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
      (a) => [a.limit],
    ),

    /** Key rows with no runnable or running instance left: nothing to coordinate. */
    forgetIdleKeys: statement<{ limit: number }>(
      `
      delete from ${s}.concurrency_keys c
      where c.key in (select key from ${s}.concurrency_keys where cardinality(holders) = 0 and run_at is null
                      limit $1 for update skip locked)
        and not exists (select 1 from ${s}.instances i
                        where i.concurrency_key = c.key and i.status in ('runnable', 'running'))`,
      (a) => [a.limit],
    ),

    /**
     * Buckets full for a minute with nobody in line, up to $1: the same as no
     * row (a bucket is created full on its next draw), so per-partition buckets
     * do not pile up. Rows a draw holds are skipped.
     */
    forgetIdleBuckets: statement<{ limit: number }>(
      `
      delete from ${s}.rate_limit_buckets b using (
        select name, partition from ${s}.rate_limit_buckets
        where full_at < now() - interval '1 minute' and (line_end is null or line_end < now())
        limit $1 for update skip locked
      ) idle
      where b.name = idle.name and b.partition = idle.partition`,
      (a) => [a.limit],
    ),
  };
}

export type FlowQueries = ReturnType<typeof flowQueries>;
