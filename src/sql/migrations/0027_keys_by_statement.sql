-- gen-durable schema, version 27: claims and group commits bring their keys' rows up to date in
-- one statement each, not one trigger call per row.
--
-- Until now every keyed row a claim took or an outcome released ran the row trigger on instances
-- (concurrency_key_changed, version 2) once: a plpgsql call with a statement or three. Measured
-- on 300-row batches over 1,000 keys of ten rows each: at the claim, those calls were 19.6 of
-- 36.4 ms (65 us a row; a keyed claim cost 113 us a row against 35 unkeyed), and a keyed outcome
-- cost 77 us against 45.
--
-- claim_rows (version 26) now runs in three statements:
--   1. choose and lock the rows, and the rows of their keys (the same CTEs as before);
--   2. claim them, with the row trigger standing aside (gen_durable.claiming, set for this
--      statement only; the trigger's WHEN reads it);
--   3. update the rows of the keys claimed from, all at once: their new holders, and each key's
--      next work read afresh. The keys' rows are locked since step 1, so this statement's
--      snapshot sees every instance committed before that lock, as the trigger's
--      lock-then-read did; a key over its limit raises as the trigger did.
-- Same signature, same rows returned: nodes of versions 26 and up call it unchanged.
--
-- The engine's group commit (a statement that is its own transaction) sets
-- gen_durable.completing and takes the outcomes that leave their key's slot (every status but
-- runnable and cancelled) out of their keys' holders itself, one update per key; the trigger
-- skips those rows. A node of an earlier version never sets it, so its outcomes still go through
-- the trigger, as does every other change of a keyed row (insert, retry, cancel, reap, release,
-- an outcome committed in a transaction that goes on, version 21's claim).
drop trigger instances_key_updated on {{schema}}.instances;
create trigger instances_key_updated after update of status, run_at, priority, queue on {{schema}}.instances
  for each row when (new.concurrency_key is not null and (
    old.status is distinct from new.status or old.run_at is distinct from new.run_at
    or old.priority is distinct from new.priority or old.queue is distinct from new.queue)
    and current_setting('gen_durable.claiming', true) is distinct from 'on'
    and not (coalesce(current_setting('gen_durable.completing', true), '') = 'on' and old.status = 'running'
             and new.status not in ('runnable', 'cancelled')))
  execute function {{schema}}.concurrency_key_changed();

create or replace function {{schema}}.claim_rows(queue_name text, machines text[], want integer, node text,
                                  lease_ms double precision, global_limit integer, start_now integer,
                                  keyed_at_most integer)
returns table (id text, machine text, step text, state jsonb, attempt integer, max_attempts integer,
               claim_token text, correlation_key text, awaited jsonb, joined boolean, parent_id text,
               inserted_at timestamptz, queue text, error jsonb, concurrency_key text, rate_limited text,
               claimed_ahead boolean, unvalidated boolean, trace_context jsonb, version integer,
               failure jsonb, cancel_requested jsonb, resumed_by text)
language plpgsql volatile
set plan_cache_mode = force_generic_plan
as $fn$
#variable_conflict use_column
declare
  chosen_ids bigint[];
  starts bool[];
  keyed_ids bigint[];
  over_key text;
  over_held integer;
  over_allowed integer;
begin
  -- 1. The rows to claim, locked, and the rows of their keys; which of them start now.
  select coalesce(array_agg(next.id order by next.id), '{}'), coalesce(array_agg(next.starts_now order by next.id), '{}'),
         coalesce(array_agg(next.id order by next.id) filter (where next.keyed), '{}')
  into chosen_ids, starts, keyed_ids
  from (
    with paused as (
      select coalesce(bool_or(paused), false) as paused from {{schema}}.queues where name = $1
    ),
    -- A queue with a global limit ($6) claims no more than its free global slots; the
    -- caller holds the queue's advisory lock, so this count sees every committed claim.
    budget as (
      select case when paused then 0
             when $6::int is null then $3::int
             else greatest(0, least($3::int, $6::int - (
               select count(*)::int from {{schema}}.instances where status = 'running' and queue = $1)))
             end as n
      from paused
    ),
    unkeyed as (
      select id, priority, run_at from {{schema}}.instances
      -- "machine || ''" keeps the planner off instances_machine: with stale statistics
      -- (a newly deployed machine) it would sort all of that machine's rows instead of
      -- walking instances_claim, many times slower per claim (bench/README.md has the figures).
      where status = 'runnable' and concurrency_key is null and queue = $1 and run_at <= now()
        and machine || '' = any($2::text[])
      order by priority, run_at, id
      limit (select n from budget)
      for update skip locked
    ),
    -- Keyed work: keys with a free slot (fewer holders than their limit) and something due,
    -- one row per key whatever queues behind it; the key row's lock makes two nodes never
    -- fill one slot twice. At most $8 keys and $8 keyed rows.
    free_keys as (
      select key, max_running - cardinality(holders) as slots from {{schema}}.concurrency_keys
      where queue = $1 and cardinality(holders) < max_running and run_at <= now()
      order by priority, run_at
      limit least((select n from budget), $8::int)
      for update skip locked
    ),
    -- The key's next instances (one for a key of limit 1) are found first and locked after:
    -- when something else holds such a row (a signal, a cancel in a caller's transaction), the
    -- key waits its turn rather than run the instance behind it; the holder's commit wakes the
    -- queue again.
    keyed as (
      select i.id, i.priority, i.run_at from free_keys k cross join lateral (
        select id from {{schema}}.instances h
        where h.concurrency_key = k.key and h.status = 'runnable' and h.queue = $1 and h.run_at <= now()
          and h.machine || '' = any($2::text[])
        order by priority, run_at, id
        limit k.slots
      ) head
      join {{schema}}.instances i on i.id = head.id
      where i.status = 'runnable'
      order by i.priority, i.run_at, i.id
      limit least((select n from budget), $8::int)
      for update of i skip locked
    ),
    chosen as (
      select id, keyed, priority, run_at
      from (select *, false as keyed from unkeyed union all select *, true from keyed) x
      order by priority, run_at, id
      limit (select n from budget)
    ),
    -- The first $7 rows (keyed ones first: a waiting keyed row holds its key) start at once and
    -- are charged their attempt now; the rest wait in the node's buffer, claimed ahead and
    -- uncharged until they start (see `start` in sql/claims.ts).
    next as (
      select id, keyed, row_number() over (order by keyed desc, priority, run_at, id) <= $7::int as starts_now
      from chosen
    )
  select * from next
  ) next;
  if cardinality(chosen_ids) = 0 then
    return;
  end if;

  -- 2. Claim them; the key trigger leaves these rows to step 3.
  perform set_config('gen_durable.claiming', 'on', true);
  return query
  with async_commit as (select set_config('synchronous_commit', 'off', true) as ok)
  update {{schema}}.instances i
  set status = 'running', attempt = i.attempt + x.starts_now::int, claimed_ahead = not x.starts_now,
      claim_token = i.claim_token + 1,
      leased_by = $4, lease_expires_at = now() + $5 * interval '1 millisecond', updated_at = now()
  from unnest(chosen_ids, starts) as x(id, starts_now), async_commit
  where i.id = x.id
  returning i.id::text as id, i.machine, i.step, i.state, i.attempt, i.max_attempts,
            i.claim_token::text as claim_token, i.correlation_key, i.awaited, i.joined,
            i.parent_id::text as parent_id, i.inserted_at, i.queue, i.error, i.concurrency_key, i.rate_limited,
            i.claimed_ahead, i.unvalidated, i.trace_context, i.version, i.failure, i.cancel_requested,
            i.resumed_by;
  perform set_config('gen_durable.claiming', 'off', true);

  -- 3. The keys' rows: their new holders, and each key's next work, read after the claim.
  if cardinality(keyed_ids) > 0 then
    with claimed as (
      select i.concurrency_key as key, array_agg(i.id order by i.id) as ids
      from {{schema}}.instances i where i.id = any(keyed_ids) group by 1
    ),
    updated as (
      update {{schema}}.concurrency_keys c set
        holders = c.holders || x.ids,
        (queue, run_at) = (select i.queue, i.run_at from {{schema}}.instances i
                           where i.concurrency_key = x.key and i.status = 'runnable' order by i.run_at, i.id limit 1),
        priority = (select i.priority from {{schema}}.instances i
                    where i.concurrency_key = x.key and i.status = 'runnable' order by i.priority, i.run_at, i.id limit 1)
      from claimed x where c.key = x.key
      returning c.key, cardinality(c.holders) as held, c.max_running
    )
    select u.key, u.held, u.max_running into over_key, over_held, over_allowed
    from updated u where u.held > u.max_running limit 1;
    if over_key is not null then
      raise exception using errcode = 'unique_violation',
        message = format('gen-durable: concurrency key %s would run %s steps at once, over its limit of %s',
                         to_jsonb(over_key)::text, over_held, over_allowed);
    end if;
  end if;
end
$fn$;
