/**
 * Signal delivery and await resumption. Both sides lock the instance row first
 * and read the mailbox in a later statement: whichever of "signal arrives" and
 * "step parks on await" commits second sees the other, so no wake-up is lost.
 */
import { quoteIdent } from "../names.js";
import { TERMINAL_SQL } from "../status.js";

export function signalQueries(schema: string) {
  const s = quoteIdent(schema);
  const lockColumns = "id::text as id, status, queue, step, await_spec, machine";
  return {
    /** Serialises a kept signal with an insert of the same key (see take_inbox in the migration). */
    lockInboxKey: `select pg_advisory_xact_lock(hashtextextended('gen_durable:inbox:' || $1, 0))`,
    // The instance's concurrency key is locked before its row (see lock_keys in the migrations):
    // resuming it changes its key's row, and a cancel or group commit holding that key may be
    // waiting for this very row. The key never changes, so reading it unlocked first is exact.
    lockById: `select ${lockColumns} from ${s}.instances
      where id = $1 and (select ${s}.lock_keys(array(select concurrency_key from ${s}.instances where id = $1))) >= 0
      for update`,
    lockLiveByKey: `select ${lockColumns} from ${s}.instances
      where correlation_key = $1 and status not in ${TERMINAL_SQL}
        and (select ${s}.lock_keys(array(
               select concurrency_key from ${s}.instances
               where correlation_key = $1 and status not in ${TERMINAL_SQL}))) >= 0
      for update`,
    lastByKey: `select id::text as id, status from ${s}.instances
      where correlation_key = $1 order by instances.id desc limit 1`,

    /** Stores a signal; a repeated dedup key stores nothing and returns no row. */
    insert: `
      insert into ${s}.signals (instance_id, correlation_key, event, payload, dedup_key, expires_at, trace_context)
      values ($1, $2, $3, $4::jsonb, $5,
              case when $1::bigint is null then now() + $6 * interval '1 millisecond' end, $7::jsonb)
      on conflict do nothing
      returning id::text as id`,

    mailbox: `
      select id::text as id, event, payload, inserted_at, trace_context from ${s}.signals
      where instance_id = $1 and event = any($2::text[]) and consumed_at is null order by signals.id`,

    /** Wakes the schedulers of queue $2 on every node, when the transaction commits. */
    notify: `select pg_notify($1, $2)`,

    /** Whether a signal with this dedup key was ever delivered to the instance (consumed or not). */
    seenDedupKey: `select 1 from ${s}.signals where instance_id = $1 and dedup_key = $2`,

    /**
     * Consumes the matched signals and makes the awaiting instance runnable, in
     * one statement: at step $5 when given (the await's onTimeout), else the
     * step it parked for. $6 is the history outcome ("resumed" or "timeout").
     */
    resume: `
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

    /** Awaiting instances whose timeout passed, locked (skipping any a signal is resuming right now). */
    timedOut: `
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

    /** Inbox signals nobody claimed within signalRetention, in bounded batches. */
    expireInbox: `
      delete from ${s}.signals where id in (
        select id from ${s}.signals where instance_id is null and expires_at < now()
        order by expires_at limit $1 for update skip locked)`,
  };
}

export type SignalQueries = ReturnType<typeof signalQueries>;
