/**
 * Queries on instances that clients make: insert, read, cancel, retry.
 * Text only; values are always bound parameters, and the schema (validated by
 * checkSchemaName) is the only identifier that enters the text.
 */
import { quoteIdent } from "../names.js";

export const TERMINAL = "('done', 'failed', 'cancelled')";

export const INSTANCE_COLUMNS =
  "id, machine, status, step, state, attempt, result, error, queue, priority, run_at, correlation_key, concurrency_key, parent_id, inserted_at, updated_at";

export function instanceQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /**
     * Bulk insert, one statement whatever the batch size. Ids are drawn from the
     * sequence up front so each result maps back to its input row; a live
     * correlation key conflicts and returns the existing id instead. Rows whose
     * existing twin was committed after this statement's snapshot come back
     * missing: the caller retries them (a new snapshot sees the twin).
     * $1: jsonb array of rows; $2: NOTIFY channel, or null to leave waking to the caller.
     */
    insert: `
      with input as (
        select x.*, nextval(pg_get_serial_sequence('${s}.instances', 'id')) as id
        from jsonb_to_recordset($1::jsonb) as x(
          idx integer, machine text, step text, state jsonb, queue text, priority integer,
          run_at timestamptz, delay_ms double precision, max_attempts integer,
          correlation_key text, concurrency_key text, parent_id bigint)
      ),
      ins as (
        insert into ${s}.instances (id, machine, step, state, queue, priority, run_at, max_attempts, correlation_key, concurrency_key, parent_id)
        -- jsonb_to_recordset reads a JSON null as SQL NULL: a state of null (the schema accepted it) is stored as JSON null.
        select id, machine, step, coalesce(state, 'null'::jsonb), queue, priority,
               coalesce(run_at, now() + make_interval(secs => coalesce(delay_ms, 0) / 1000.0)),
               max_attempts, correlation_key, concurrency_key, parent_id
        -- One order for every insert, so concurrent batches take key locks (the correlation
        -- key's unique entry, the concurrency key's row in its trigger) in the same order.
        from input order by correlation_key nulls last, concurrency_key collate "C" nulls last, idx
        on conflict (correlation_key) where correlation_key is not null and status not in ${TERMINAL} do nothing
        -- take_inbox (see the migration) moves signals kept for the key into the new mailbox.
        returning id, correlation_key, queue, run_at <= now() as due,
          case when correlation_key is not null then ${s}.take_inbox(correlation_key, id) end as inbox
      ),
      woke as (
        select count(pg_notify($2::text, q.queue)) as n
        from (select distinct queue from ins where due and $2::text is not null) q
      )
      select x.idx, x.id::text as id, true as inserted, ins.queue, ins.due
        from input x join ins on ins.id = x.id
      union all
      select x.idx, e.id::text, false, e.queue, false
        from input x join ${s}.instances e
          on e.correlation_key = x.correlation_key and e.status not in ${TERMINAL}
        where x.correlation_key is not null and not exists (select 1 from ins where ins.id = x.id)
      union all
      -- never a row: makes the statement evaluate the NOTIFYs
      select -1, null, null, null, null from woke where n < 0`,

    get: `select ${INSTANCE_COLUMNS} from ${s}.instances where id = $1`,
    getByKey: `select ${INSTANCE_COLUMNS} from ${s}.instances where correlation_key = $1
               order by (status not in ${TERMINAL}) desc, id desc limit 1`,

    list: `
      select ${INSTANCE_COLUMNS} from ${s}.instances
      where ($1::text is null or machine = $1) and ($2::text[] is null or status = any($2))
        and ($3::text is null or queue = $3) and ($4::text is null or correlation_key = $4)
        and ($5::bigint is null or id < $5)
      order by id desc limit $6`,

    history: `
      select at, from_step, to_step, outcome, attempt, duration_ms, error
      from ${s}.transitions where instance_id = $1 order by id`,

    /**
     * Terminal `cancelled` unless already terminal, together with its live
     * descendants (a parent's cancellation reaches its children and theirs).
     * Returns the status before and the ids cancelled. Locks the instance first
     * and only then its descendants; completions lock only their own rows, so
     * this never forms a lock cycle with them.
     */
    cancel: `
      with recursive target as (select id, status, step, attempt, machine from ${s}.instances where id = $1 for update),
      tree as (
        select id from target where status not in ${TERMINAL}
        union all
        select c.id from ${s}.instances c join tree t on c.parent_id = t.id
      ),
      changed as (
        update ${s}.instances i
        set status = 'cancelled', error = $2::jsonb, await_spec = null, leased_by = null,
            lease_expires_at = null, updated_at = now()
        from tree t where i.id = t.id and i.status not in ${TERMINAL}
        returning i.id, i.step, i.attempt
      ),
      history as (
        insert into ${s}.transitions (instance_id, from_step, to_step, outcome, attempt, error)
        select id, step, null, 'cancelled', attempt, $2::jsonb from changed
      )
      select status, machine, array(select id::text from changed) as cancelled from target`,

    /** A failed instance runs its failed step again, with fresh attempts. */
    retry: `
      with target as (select id, status, step from ${s}.instances where id = $1 for update),
      changed as (
        update ${s}.instances i
        set status = 'runnable', attempt = 0, run_at = now(), updated_at = now()
        from target t where i.id = t.id and t.status = 'failed'
        returning i.id, i.queue
      ),
      history as (
        insert into ${s}.transitions (instance_id, from_step, to_step, outcome, attempt)
        select t.id, t.step, t.step, 'retried', 0 from target t join changed c on c.id = t.id
      ),
      woke as (select count(pg_notify($2::text, queue)) as n from changed)
      select t.status, (select n from woke) as woke from target t`,
  };
}

export type InstanceQueries = ReturnType<typeof instanceQueries>;
