/**
 * Garbage collection: deleting terminal instances with their history and
 * signals once they are older than their retention.
 *
 * The guarantees, and why they hold:
 * - Only terminal rows go. Victims are picked with `for update skip locked`
 *   and the status test is re-checked on the row's newest version when it is
 *   locked, so a row retried (failed -> runnable) after the snapshot is left.
 * - Two pruners (two nodes, or the GC loop and `gen-durable prune`) never
 *   wait for each other and never delete the same row: each skips rows the
 *   other has locked. The GC never waits on an instance lock at all, and no
 *   other code locks the transitions or signals of a terminal instance, so it
 *   cannot take part in a deadlock.
 * - A terminal child that its parent still needs is kept: for a live parent,
 *   one the join sweep has not counted yet, or one of the parent's latest
 *   spawn (the join step reads those in ctx.children, possibly days later
 *   after retries); for a parent that failed at its join step, one of its
 *   latest spawn (engine.retry runs that join again). Either way the latest
 *   spawn stays, so a retry racing the GC changes nothing it decides.
 * - Each batch is one statement, hence one short transaction: the instance,
 *   its transitions and its signals go together or not at all.
 *
 * Text only; values are bound parameters, the schema is the only identifier.
 */
import { quoteIdent } from "../names.js";
import { TERMINAL_SQL } from "../status.js";
import { HOLDS_DONE } from "./done-transition.js";
import { probe, statement } from "./query.js";

/** Keyset cursor: the last deleted row's updated_at (as text, to keep microseconds) and id. */
export interface PruneCursor {
  at: string;
  id: string;
}

/** What `pruneBatch` takes ($1 … $6; the cursor is $4 and $5). */
export interface PruneBatchArgs {
  machine: string;
  /** Terminal for longer than this (database clock). */
  retentionMs: number;
  limit: number;
  /** Where the previous batch ended; null for the first. */
  after: PruneCursor | null;
  /** The idempotency window: correlation keys of victims that finished within it are remembered. */
  windowMs: number;
}

/** What one batch deleted, and where the next one starts. */
export interface PruneBatchRow {
  instances: number;
  transitions: number;
  signals: number;
  /** The cursor's updated_at; null when nothing was deleted. */
  after_at: string | null;
  after_id: string | null;
}

export function gcQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /**
     * The machines that have terminal rows: a loose index scan (instances_gc
     * or instances_machine, both lead with machine), one index probe per
     * machine instead of a scan of the table.
     */
    machines: probe<{ machine: string }>(`
      with recursive m(machine) as (
        (select machine from ${s}.instances where status in ${TERMINAL_SQL} order by machine limit 1)
        union all
        select (select i.machine from ${s}.instances i
                where i.status in ${TERMINAL_SQL} and i.machine > m.machine order by i.machine limit 1)
        from m where m.machine is not null
      )
      select machine from m where machine is not null`),

    /** The recorded per-machine retention overrides. */
    retentions: probe<{ machine: string; retention_ms: number }>(
      `select machine, retention_ms::float8 as retention_ms from ${s}.gc_retention`,
    ),

    /** Serialises recordRetentions of engines starting together on one schema (`key` names the schema). */
    lockRetentions: statement<{ key: string }>(`select pg_advisory_xact_lock(hashtextextended($1, 0))`, (a) => [a.key]),

    /**
     * Records the overrides of the machines an engine defines (`overrides`)
     * and forgets those of its machines without one (`without`).
     * Names are sorted, so engines starting together lock rows in one order.
     */
    recordRetentions: statement<{
      overrides: ReadonlyArray<{ machine: string; ms: number }>;
      without: readonly string[];
    }>(
      `
      with upserted as (
        insert into ${s}.gc_retention (machine, retention_ms)
        select machine, ms from unnest($1::text[], $2::bigint[]) as x(machine, ms) order by machine
        on conflict (machine) do update set retention_ms = excluded.retention_ms, updated_at = now()
        where gc_retention.retention_ms is distinct from excluded.retention_ms
      )
      delete from ${s}.gc_retention where machine in (select unnest($3::text[]) order by 1)`,
      (a) => [a.overrides.map((o) => o.machine), a.overrides.map((o) => o.ms), a.without],
    ),

    /**
     * Deletes up to $3 instances of machine $1 that became terminal more than
     * $2 ms ago (database clock), oldest first, after the keyset cursor
     * ($4 updated_at as text, $5 id; null for the first batch), with their
     * transitions and signals. Returns the counts and the cursor for the next
     * batch (null when nothing was deleted). A victim with a correlation key that
     * finished less than $6 ms (the idempotency window) ago is remembered in
     * remembered_keys, so ifExists "reuse" / "reject" still see it: only when the
     * retention is shorter than the window. Keys in order, so two pruners lock them alike.
     */
    pruneBatch: statement<PruneBatchArgs, PruneBatchRow>(
      `
      with victims as (
        select c.id, c.updated_at from ${s}.instances c
        where c.machine = $1 and c.status in ${TERMINAL_SQL}
          and c.updated_at < now() - $2::float8 * interval '1 millisecond'
          and ($4::timestamptz is null or (c.updated_at, c.id) > ($4::timestamptz, $5::bigint))
          and (c.parent_id is null or not exists (
            select 1 from ${s}.instances p
            where p.id = c.parent_id
              and ((p.status not in ${TERMINAL_SQL} and (not c.join_counted or c.id >= coalesce(p.children_from, 0)))
                or (p.status = 'failed' and p.joined and c.id >= p.children_from))))
        order by c.updated_at, c.id
        limit $3
        for update of c skip locked
      ),
      kept_keys as (
        insert into ${s}.remembered_keys as r (kind, key, instance_id, expires_at)
        select distinct on (c.correlation_key) 'correlation', c.correlation_key, c.id,
               c.updated_at + $6::float8 * interval '1 millisecond'
        from ${s}.instances c join victims v on v.id = c.id
        where c.correlation_key is not null and c.updated_at > now() - $6::float8 * interval '1 millisecond'
        order by c.correlation_key, c.id desc
        on conflict (kind, key) do update set instance_id = excluded.instance_id, expires_at = excluded.expires_at
        where r.instance_id < excluded.instance_id
      ),
      gone_transitions as (delete from ${s}.transitions where instance_id in (select id from victims) returning 1),
      gone_signals as (delete from ${s}.signals where instance_id in (select id from victims) returning 1),
      gone as (delete from ${s}.instances i where id in (select id from victims)
               returning id, updated_at, ${HOLDS_DONE} as held_done),
      last as (select updated_at, id from gone order by updated_at desc, id desc limit 1)
      select (select count(*) from gone)::int as instances,
             -- History rows: those of transitions, and the dones kept in instance rows (doneTransitions).
             ((select count(*) from gone_transitions) + (select count(*) from gone where held_done))::int
               as transitions,
             (select count(*) from gone_signals)::int as signals,
             (select updated_at::text from last) as after_at,
             (select id::text from last) as after_id`,
      (a) => [a.machine, a.retentionMs, a.limit, a.after?.at ?? null, a.after?.id ?? null, a.windowMs],
    ),

    /** Remembered idempotency and correlation keys past their window, up to $1 (index remembered_keys_expiry). */
    expireRemembered: statement<{ limit: number }>(
      `
      delete from ${s}.remembered_keys where (kind, key) in (
        select kind, key from ${s}.remembered_keys where expires_at < now()
        order by expires_at limit $1 for update skip locked)`,
      (a) => [a.limit],
    ),
  };
}

export type GcQueries = ReturnType<typeof gcQueries>;
