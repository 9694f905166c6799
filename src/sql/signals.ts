/**
 * Signal delivery and await resumption. Both sides lock the instance row first
 * and read the mailbox in a later statement: whichever of "signal arrives" and
 * "step parks on await" commits second sees the other, so no wake-up is lost.
 */
import { quoteIdent } from "../names.js";
import type { NormalizedSpec } from "../runtime/await-spec.js";
import type { Status } from "../status.js";
import { TERMINAL_SQL } from "../status.js";
import type { TraceCarrier } from "../telemetry/propagation.js";
import { statement } from "./query.js";

/** The instance a signal is for, locked (lockById, lockLiveByKey). */
export interface LockedInstanceRow {
  id: string;
  status: Status;
  queue: string;
  step: string;
  await_spec: NormalizedSpec | null;
  machine: string;
}

/** A signal to store: in an instance's mailbox (`instanceId`), or kept in a correlation key's inbox. */
export interface SignalInsertArgs {
  instanceId: string | null;
  /** The inbox's key, when kept for an instance not inserted yet. */
  correlationKey: string | null;
  event: string;
  /** The payload as JSON (null: SQL null). */
  payload: string | null;
  dedupKey: string | null;
  /** How long a kept signal waits in the inbox (ignored for a mailbox). */
  retentionMs: number;
  /** The sender's trace context as JSON, or null. */
  traceContext: string | null;
}

/** An unconsumed signal in an instance's mailbox. */
export interface MailboxRow {
  id: string;
  event: string;
  payload: unknown;
  inserted_at: Date;
  trace_context: TraceCarrier | null;
}

/** What `resume` takes ($1 … $6, in that order). */
export interface ResumeArgs {
  instanceId: string;
  /** The signals it consumes. */
  signalIds: readonly string[];
  /** ctx.awaited of the step it resumes, as JSON. */
  awaited: string;
  /** NOTIFY channel to wake its queue with the commit, or null. */
  channel: string | null;
  /** The step to resume at (an await's onTimeout), or null for the step it parked for. */
  step: string | null;
  outcome: "resumed" | "timeout";
}

export function signalQueries(schema: string) {
  const s = quoteIdent(schema);
  const lockColumns = "id::text as id, status, queue, step, await_spec, machine";
  return {
    /** Serialises a kept signal with an insert of the same key (see take_inbox in the migration). */
    lockInboxKey: statement<{ correlationKey: string }>(
      `select pg_advisory_xact_lock(hashtextextended('gen_durable:inbox:' || $1, 0))`,
      (a) => [a.correlationKey],
    ),
    // The instance's concurrency key is locked before its row (see lock_keys in the migrations):
    // resuming it changes its key's row, and a cancel or group commit holding that key may be
    // waiting for this very row. The key never changes, so reading it unlocked first is exact.
    lockById: statement<{ id: string }, LockedInstanceRow>(
      `select ${lockColumns} from ${s}.instances
      where id = $1 and (select ${s}.lock_keys(array(select concurrency_key from ${s}.instances where id = $1))) >= 0
      for update`,
      (a) => [a.id],
    ),
    lockLiveByKey: statement<{ correlationKey: string }, LockedInstanceRow>(
      `select ${lockColumns} from ${s}.instances
      where correlation_key = $1 and status not in ${TERMINAL_SQL}
        and (select ${s}.lock_keys(array(
               select concurrency_key from ${s}.instances
               where correlation_key = $1 and status not in ${TERMINAL_SQL}))) >= 0
      for update`,
      (a) => [a.correlationKey],
    ),
    lastByKey: statement<{ correlationKey: string }, { id: string; status: Status }>(
      `select id::text as id, status from ${s}.instances
      where correlation_key = $1 order by instances.id desc limit 1`,
      (a) => [a.correlationKey],
    ),

    /** Stores a signal; a repeated dedup key stores nothing and returns no row. */
    insert: statement<SignalInsertArgs, { id: string }>(
      `
      insert into ${s}.signals (instance_id, correlation_key, event, payload, dedup_key, expires_at, trace_context)
      values ($1, $2, $3, $4::jsonb, $5,
              case when $1::bigint is null then now() + $6 * interval '1 millisecond' end, $7::jsonb)
      on conflict do nothing
      returning id::text as id`,
      (a) => [a.instanceId, a.correlationKey, a.event, a.payload, a.dedupKey, a.retentionMs, a.traceContext],
    ),

    mailbox: statement<{ instanceId: string; events: readonly string[] }, MailboxRow>(
      `
      select id::text as id, event, payload, inserted_at, trace_context from ${s}.signals
      where instance_id = $1 and event = any($2::text[]) and consumed_at is null order by signals.id`,
      (a) => [a.instanceId, a.events],
    ),

    /** Wakes the schedulers of `queue` ($2) on every node, when the transaction commits. */
    notify: statement<{ channel: string; queue: string }>(`select pg_notify($1, $2)`, (a) => [a.channel, a.queue]),

    /** Whether a signal with this dedup key was ever delivered to the instance (consumed or not). */
    seenDedupKey: statement<{ instanceId: string; dedupKey: string }>(
      `select 1 from ${s}.signals where instance_id = $1 and dedup_key = $2`,
      (a) => [a.instanceId, a.dedupKey],
    ),

    /**
     * Consumes the matched signals and makes the awaiting instance runnable, in
     * one statement: at step $5 (`step`) when given (the await's onTimeout), else
     * the step it parked for. $6 (`outcome`) is the history outcome ("resumed" or "timeout").
     */
    resume: statement<ResumeArgs, { queue: string; woke: string }>(
      `
      with consumed as (update ${s}.signals set consumed_at = now() where id = any($2::bigint[])),
      before as (select id, step from ${s}.instances where id = $1),
      resumed as (
        update ${s}.instances
        set status = 'runnable', run_at = now(), step = coalesce($5::text, step), awaited = $3::jsonb,
            await_spec = null, attempt = 0, updated_at = now(),
            resumed_by = case $6::text when 'timeout' then 'timeout' else 'signal' end
        where id = $1 and status = 'awaiting'
        returning id, step, queue
      ),
      history as (
        insert into ${s}.transitions (instance_id, from_step, to_step, outcome)
        select r.id, b.step, r.step, $6::text from resumed r join before b on b.id = r.id
      ),
      woke as (select count(pg_notify($4::text, queue)) as n from resumed where $4::text is not null)
      select queue, (select n from woke) as woke from resumed`,
      (a) => [a.instanceId, a.signalIds, a.awaited, a.channel, a.step, a.outcome],
    ),

    /** Awaiting instances whose timeout passed, locked (skipping any a signal is resuming right now). */
    timedOut: statement<{ limit: number }, { id: string; await_spec: NormalizedSpec & { onTimeout: string } }>(
      `
      with due as (
        select id, concurrency_key from ${s}.instances
        where status = 'awaiting' and run_at <= now()
        order by run_at limit $1
      ),
      -- Their keys first, in the one global order (see lock_keys); then the rows, skipping locked ones.
      keys_locked as (select ${s}.lock_keys(array(select concurrency_key from due)) as n)
      select i.id::text as id, i.await_spec from ${s}.instances i join due d on d.id = i.id
      where i.status = 'awaiting' and i.run_at <= now() and (select n from keys_locked) >= 0
      order by i.run_at
      for update of i skip locked`,
      (a) => [a.limit],
    ),

    /** Inbox signals nobody claimed within signalRetention, in bounded batches. */
    expireInbox: statement<{ limit: number }>(
      `
      delete from ${s}.signals where id in (
        select id from ${s}.signals where instance_id is null and expires_at < now()
        order by expires_at limit $1 for update skip locked)`,
      (a) => [a.limit],
    ),
  };
}

export type SignalQueries = ReturnType<typeof signalQueries>;
