/**
 * Signal delivery and await resumption. Both sides lock the instance row first
 * and read the mailbox in a later statement: whichever of "signal arrives" and
 * "step parks on await" commits second sees the other, so no wake-up is lost.
 */
import { quoteIdent } from "../names.js";
import { TERMINAL } from "./instances.js";

export function signalQueries(schema: string) {
  const s = quoteIdent(schema);
  const lockColumns = "id::text as id, status, queue, step, await_spec";
  return {
    lockById: `select ${lockColumns} from ${s}.instances where id = $1 for update`,
    lockLiveByKey: `select ${lockColumns} from ${s}.instances where correlation_key = $1 and status not in ${TERMINAL} for update`,
    lastStatusByKey: `select status from ${s}.instances where correlation_key = $1 order by id desc limit 1`,

    /** Stores a signal; a repeated dedup key stores nothing and returns no row. */
    insert: `
      insert into ${s}.signals (instance_id, correlation_key, event, payload, dedup_key, expires_at)
      values ($1, $2, $3, $4::jsonb, $5, case when $1::bigint is null then now() + $6 * interval '1 millisecond' end)
      on conflict do nothing
      returning id::text as id`,

    mailbox: `
      select id::text as id, event, payload, inserted_at from ${s}.signals
      where instance_id = $1 and event = any($2::text[]) order by id`,

    /** Consumes the matched signals and makes the awaiting instance runnable, in one statement. */
    resume: `
      with consumed as (delete from ${s}.signals where id = any($2::bigint[])),
      resumed as (
        update ${s}.instances
        set status = 'runnable', run_at = now(), awaited = $3::jsonb, await_spec = null, attempt = 0, updated_at = now()
        where id = $1 and status = 'awaiting'
        returning id, step, queue
      ),
      history as (
        insert into ${s}.transitions (instance_id, from_step, to_step, outcome)
        select id, step, step, 'resumed' from resumed
      ),
      woke as (select count(pg_notify($4::text, queue)) as n from resumed where $4::text is not null)
      select queue, (select n from woke) as woke from resumed`,
  };
}

export type SignalQueries = ReturnType<typeof signalQueries>;
