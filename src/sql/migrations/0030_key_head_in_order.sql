-- gen-durable schema, version 30: a claim finds each free key's next instance by walking the key's
-- runnable rows in order and stopping at the first, whatever the statistics and cost settings.
--
-- claim_rows (version 27) looks up the next instances of each free key with
--   where concurrency_key = <key> and status = 'runnable' and queue = $1 and run_at <= now()
--     and machine || '' = any($2)  order by priority, run_at, id  limit <the key's free slots>
-- which instances_key_runnable (concurrency_key, priority, run_at, id) serves in order: one row
-- read for a key of limit 1. But the planner takes the queue and machine checks for selective
-- (they hardly ever are: a key's instances share them), expects the walk to read the whole key
-- before it finds a row, and then a plan that reads every runnable row of the key and sorts them
-- looks as cheap, through either of the key's indexes and a bitmap. Which plan a session keeps
-- (claim_rows plans once per session) depended on the statistics when it was made. Measured on
-- 1,000 keys of 30 queued rows, a claim of 200 keys read 7,002 rows of instances with current
-- statistics on Postgres 15 and 18, 35 a key, where walking in order reads 6 (the key's next row,
-- locked and claimed, and the key's next work looked up); a key with 10,000 queued paid all of
-- them on every claim of it. With index reads priced high (random_page_cost = 400) the plans
-- scanned the table for each key: 6,060,602 rows for one claim.
--
-- Now the walk in order is the only plan left:
--   * instances_key_due (concurrency_key, run_at, id), which serves a key's earliest due time, is
--     rebuilt with the predicate `status || '' = 'runnable'`: the same rows, but a query stating
--     `status = 'runnable'`, as the lookup does, cannot use it. The two statements that want it
--     (the row trigger's and the claim's reading of a key's next due time) state the predicate's
--     own form, below; nothing else read it.
--   * claim_rows runs with enable_bitmapscan = off and enable_seqscan = off (SET clauses: this
--     function and what it calls, nothing else on the connection). With one index left and no
--     bitmap, walking it in order is cheaper than any plan that reads the same rows and sorts
--     them, however few rows the planner expects. Every other statement of the claim finds its
--     rows through an index as before (the claimed keyed rows by id: the primary key, where a
--     bitmap of it could be chosen before).
-- The index is rebuilt under the migration's lock: on a big table this version takes as long as
-- reading the table once. Same signatures, same rows returned: nodes of versions 27 and up call
-- claim_rows unchanged.
drop index {{schema}}.instances_key_due;
create index instances_key_due on {{schema}}.instances (concurrency_key, run_at, id)
  where status || '' = 'runnable' and concurrency_key is not null;

-- Version 17's trigger, reading its key's next due time through instances_key_due (above).
create or replace function {{schema}}.concurrency_key_changed() returns trigger
language plpgsql as $$
declare
  k text := new.concurrency_key;
  was_runnable boolean := false;
  was_running boolean := false;
  held integer;
  allowed integer;
begin
  if tg_op = 'UPDATE' then
    was_runnable := old.status = 'runnable';
    was_running := old.status = 'running';
  end if;
  if was_runnable then
    perform 1 from {{schema}}.concurrency_keys where key = k for update;
    update {{schema}}.concurrency_keys c set
      holders = case when new.status = 'running' then c.holders || new.id else c.holders end,
      (queue, run_at) = (select i.queue, i.run_at from {{schema}}.instances i
                         where i.concurrency_key = k and i.status || '' = 'runnable' order by i.run_at, i.id limit 1),
      priority = (select i.priority from {{schema}}.instances i
                  where i.concurrency_key = k and i.status = 'runnable' order by i.priority, i.run_at, i.id limit 1)
    where c.key = k
    returning cardinality(c.holders), c.max_running into held, allowed;
    if new.status = 'running' and held > allowed then
      raise exception using errcode = 'unique_violation',
        message = format('gen-durable: concurrency key %s would run %s steps at once, over its limit of %s',
                         to_jsonb(k)::text, held, allowed);
    end if;
  elsif new.status = 'runnable' then
    insert into {{schema}}.concurrency_keys as c (key, holders, max_running, queue, priority, run_at)
    values (k, '{}', coalesce(new.concurrency_limit, 1), new.queue, new.priority, new.run_at)
    on conflict (key) do update set
      holders = case when was_running then array_remove(c.holders, new.id) else c.holders end,
      max_running = excluded.max_running,
      queue = case when c.run_at is null or new.run_at < c.run_at then new.queue else c.queue end,
      priority = least(coalesce(c.priority, new.priority), new.priority),
      run_at = least(coalesce(c.run_at, new.run_at), new.run_at);
  elsif was_running and new.status <> 'cancelled' then
    update {{schema}}.concurrency_keys set holders = array_remove(holders, new.id) where key = k;
  end if;
  return null;
end
$$;

-- Version 27's claim_rows, with the two settings and its key's next due time read through
-- instances_key_due (above).
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
set enable_bitmapscan = off
set enable_seqscan = off
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
                           where i.concurrency_key = x.key and i.status || '' = 'runnable' order by i.run_at, i.id limit 1),
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
