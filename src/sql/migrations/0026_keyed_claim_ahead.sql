-- gen-durable schema, version 26: keyed rows are claimed ahead like the others.
--
-- Until now a claim took keyed rows only into the node's free slots (its last parameter): a
-- claimed row holds its key, and one waiting in the node's buffer held it while the node's slots
-- were busy, for as long as they stayed busy. So keyed work got nothing of the claim-ahead
-- buffer: small claims, one per few settled steps, and 1,000 keys x 10 no-op jobs ran at 0.59-0.67
-- of the same jobs unkeyed. The buffer now gives back a row that waited a second for a slot, and
-- holds only about 50 ms of the node's work, which bounds how long a buffered row holds its key.
--
-- claim_rows is claim (version 21) with the two counts apart: $7 how many rows start at once (free
-- slots: charged their attempt now), $8 at most how many keyed rows (the node passes its whole
-- want). A new name rather than an overload, so that every function keeps one signature; claim
-- stays as it was, for nodes of an earlier version during an upgrade.
create function {{schema}}.claim_rows(queue_name text, machines text[], want integer, node text,
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
begin
  return query
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
    select id, row_number() over (order by keyed desc, priority, run_at, id) <= $7::int as starts_now
    from chosen
  ),
  async_commit as (select set_config('synchronous_commit', 'off', true) as ok)
  update {{schema}}.instances i
  set status = 'running', attempt = i.attempt + next.starts_now::int, claimed_ahead = not next.starts_now,
      claim_token = i.claim_token + 1,
      leased_by = $4, lease_expires_at = now() + $5 * interval '1 millisecond', updated_at = now()
  from next, async_commit where i.id = next.id
  returning i.id::text as id, i.machine, i.step, i.state, i.attempt, i.max_attempts,
            i.claim_token::text as claim_token, i.correlation_key, i.awaited, i.joined,
            i.parent_id::text as parent_id, i.inserted_at, i.queue, i.error, i.concurrency_key, i.rate_limited,
            i.claimed_ahead, i.unvalidated, i.trace_context, i.version, i.failure, i.cancel_requested,
            i.resumed_by;
end
$fn$;

