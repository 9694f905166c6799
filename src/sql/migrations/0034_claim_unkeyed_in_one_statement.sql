-- gen-durable schema, version 34: a claim from a queue with no keyed work due takes one statement.
--
-- claim_rows (version 30) runs three statements for every claim: the first chooses and locks the
-- rows (unkeyed and keyed, under the queue's pause and global limit) and gathers them into arrays,
-- the second claims them, the third brings the keys' rows up to date, with the key trigger told
-- to stand aside in between. Most of a claim of one row is setting those statements up, not
-- running them: counted by bench/instructions.sh (BENCH_BATCH=1, the claim alone), 1,278,093
-- instructions in the backend a claim, of which 169,000 set up the first statement's four
-- aggregates and about as much its keyed half. A claim of one row is what a step started on an
-- idle worker waits for (an insert or a signal, then the claim, then the step), and a cold
-- backend runs it in about half a millisecond (pg_stat_user_functions: 0.535 ms a call, one
-- insert or signal at a time on an idle worker).
--
-- Now, without a global limit, the function first asks whether any key of the queue has a free
-- slot and due work (one probe of concurrency_keys_claim). With none, the keyed half would find
-- nothing, and the unkeyed rows are chosen, locked and claimed in one statement: the rows, their
-- order and which of them start now are those the three statements would give. A key that
-- becomes free between the probe and the claim is claimed by the next claim, as it would be had it
-- become free just after the three statements' snapshot; what frees it wakes the queue. A queue
-- with a global limit, or with keyed work due, takes the three statements as before.
--
-- Counted the same way: 973,566 instructions a claim of one row (-23.8 %); claims of 256 and their
-- commits 265,802 -> 257,767 a job (-3.0 %). Same signature, same rows returned: nodes of versions
-- 27 and up call claim_rows unchanged.
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
  -- 0. Without a global limit, and with no key of this queue that has a free slot and due work,
  -- the keyed half below would find nothing: the unkeyed rows are claimed in one statement.
  if $6 is null and not exists (
    select 1 from {{schema}}.concurrency_keys k
    where k.queue = $1 and cardinality(k.holders) < k.max_running and k.run_at <= now()
  ) then
    return query
    with chosen as (
      select c.id, c.priority, c.run_at from {{schema}}.instances c
      where c.status = 'runnable' and c.concurrency_key is null and c.queue = $1 and c.run_at <= now()
        and c.machine || '' = any($2::text[])
        and not exists (select 1 from {{schema}}.queues q where q.name = $1 and q.paused)
      order by c.priority, c.run_at, c.id
      limit $3
      for update skip locked
    ),
    async_commit as (select set_config('synchronous_commit', 'off', true) as ok)
    -- The ids in claim order as an array, unnested with their place: the first $7 start at once and
    -- are charged their attempt now, the rest wait in the node's buffer, claimed ahead (as in step
    -- 1). Found by the primary key one by one, whatever index reads are priced at: a join to the
    -- chosen rows as a table could be planned as a walk of the whole primary key.
    update {{schema}}.instances i
    set status = 'running', attempt = i.attempt + (x.n <= $7::int)::int, claimed_ahead = x.n > $7::int,
        claim_token = i.claim_token + 1,
        leased_by = $4, lease_expires_at = now() + $5 * interval '1 millisecond', updated_at = now()
    from unnest(array(select c.id from chosen c order by c.priority, c.run_at, c.id)) with ordinality as x(id, n),
         async_commit
    where i.id = x.id
    returning i.id::text as id, i.machine, i.step, i.state, i.attempt, i.max_attempts,
              i.claim_token::text as claim_token, i.correlation_key, i.awaited, i.joined,
              i.parent_id::text as parent_id, i.inserted_at, i.queue, i.error, i.concurrency_key, i.rate_limited,
              i.claimed_ahead, i.unvalidated, i.trace_context, i.version, i.failure, i.cancel_requested,
              i.resumed_by;
    return;
  end if;

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
