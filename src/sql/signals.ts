/**
 * Signal delivery and await resumption. Both sides lock the instance row first
 * and read the mailbox in a later statement (deliver_signal's are statements of
 * one function, each with its own snapshot): whichever of "signal arrives" and
 * "step parks on await" commits second sees the other, so no wake-up is lost.
 */
import { quoteIdent } from "../names.js";
import type { NormalizedSpec } from "../runtime/await-spec.js";
import type { Status } from "../status.js";
import type { TraceCarrier } from "../telemetry/propagation.js";
import { machineOf } from "./instances.js";
import { statement } from "./query.js";

/** What `deliver` takes: engine.signal's arguments, already checked. */
export interface DeliverArgs {
  /** A correlation key, or an instance id when `byId`. */
  target: string;
  byId: boolean;
  event: string;
  /** The payload as JSON (null: SQL null). */
  payload: string | null;
  dedupKey: string | null;
  /** Keep it in the key's inbox when no instance is live (ifMissing "keep"). */
  keep: boolean;
  /** How long a kept signal waits in the inbox. */
  retentionMs: number;
  /** The sender's trace context as JSON, or null. */
  traceContext: string | null;
  /** NOTIFY channel to wake the instance's queue with the commit, or null. */
  channel: string | null;
  /** Deliver only to an instance of this machine (the typed engine.signal), or null. */
  machineIs: string | null;
  /** Machines whose signal schema refuses the payload: nothing is delivered to their instances. */
  machineNot: readonly string[];
}

/** What `deliver` returns: see deliver_signal in migration 0022 for each outcome. */
export interface DeliverRow {
  /** "single": from deliverMany only, nothing stored: the item is to be sent alone. */
  outcome: "delivered" | "kept" | "duplicate" | "terminated" | "missing" | "refused" | "single";
  signal_id: string | null;
  instance_id: string | null;
  status: Status | null;
  machine: string | null;
  wake_queue: string | null;
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
  return {
    /**
     * engine.signal in one statement (deliver_signal, migrations 0022 and 0037): locks the
     * instance's concurrency key and row, stores the signal, and resumes the instance when its
     * mailbox now satisfies its await, all server-side in that order. A signal that completes an
     * await of its event on its own, with nothing older waiting, is stored consumed
     * (store_signal): one row written, where the mailbox's way wrote it and then consumed it.
     */
    deliver: statement<DeliverArgs, DeliverRow>(
      `select outcome, signal_id::text as signal_id, instance_id::text as instance_id, status, machine, wake_queue
      from ${s}.deliver_signal($1, $2, $3, $4::jsonb, $5, $6, $7, $8::jsonb, $9, $10, $11::text[])`,
      (a) => [
        a.byId,
        a.target,
        a.event,
        a.payload,
        a.dedupKey,
        a.keep,
        a.retentionMs,
        a.traceContext,
        a.channel,
        a.machineIs,
        a.machineNot,
      ],
      { prepare: true },
    ),

    /**
     * Several signals in one statement and one commit (deliver_signals, migration 0022): each as
     * `deliver` would, for the targets whose row it could lock without waiting (in id order, no
     * concurrency key); the others come back with outcome "single", nothing stored. `items` is the
     * JSON array of deliver's arguments (no keep); `idx` the item's position.
     */
    deliverMany: statement<{ items: string }, DeliverRow & { idx: number }>(
      `select idx, outcome, signal_id::text as signal_id, instance_id::text as instance_id, status, machine, wake_queue
      from ${s}.deliver_signals($1::jsonb)`,
      (a) => [a.items],
      { prepare: true },
    ),

    /** Why a signal to a finished instance was refused (runtime/signals.ts settle). */
    machineOf: machineOf(s),

    mailbox: statement<{ instanceId: string; events: readonly string[] }, MailboxRow>(
      `
      select id::text as id, event, payload, inserted_at, trace_context from ${s}.signals
      where instance_id = $1 and event = any($2::text[]) and consumed_at is null order by signals.id`,
      (a) => [a.instanceId, a.events],
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
