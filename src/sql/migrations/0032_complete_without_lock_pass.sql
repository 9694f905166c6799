-- gen-durable schema, version 32: the group commit locks each row once, as it updates it.
--
-- The group commit (src/sql/claims.ts) locked its rows in a pass of its own before updating them:
--   rows_locked as (select ... order by i.id for update), won as (update ... from rows_locked ...)
-- so that any two statements that lock several instance rows (two commits, a commit and a bulk
-- cancel or retry, a release) take them in one order, id order, and never wait for each other in
-- a cycle. The order came from the pass's sort: the update itself joined the outcomes to the
-- table in whatever order its plan chose (by hashing, for a few hundred rows: heap order). The
-- pass cost a lock of each row (a tuple lock and a WAL record), and a second lookup of it.
--
-- Now the update locks the rows itself, in id order, without a pass: complete_outcomes sorts the
-- outcomes by id and runs the update with sequential and bitmap scans turned off (SET clauses: this
-- function and what it calls, nothing else on the connection). The table's only index over every
-- row is its primary key, so whatever join the planner picks yields the rows in id order: a nested
-- loop driven by the sorted outcomes (each row found by the primary key), a hash join probed by
-- them, or a walk of the primary key (probing a hash of the outcomes, merging with them, or with
-- them inside a nested loop). The fence (the claim's token, still running) is the update's own
-- condition; a row updated by another transaction meanwhile is re-read and the fence checked on
-- its newest version before it is written, as the pass's lock did.
-- The history rows are written from what the update returns (its outcome columns), without
-- joining the outcomes again. A keyed batch's release of its keys' slots is a second statement of
-- the function, run only for such a batch: a batch without keyed outcomes never names
-- concurrency_keys, as before.
--
-- Measured on Postgres 15 with fsync on, batches of 300 no-op outcomes, backend CPU per outcome
-- over 30,000 outcomes, five runs each: 16.2 -> 14.4 us; WAL 530 -> 474 bytes an outcome.
--
-- Same rows written, same rows returned as the statement before; nodes of version 31 keep their
-- own statement, which takes the same locks in the same order.
create function {{schema}}.complete_outcomes(outcomes json, release_keys boolean)
returns table (id text, parent_id text)
language plpgsql volatile
set plan_cache_mode = force_generic_plan
set enable_bitmapscan = off
set enable_seqscan = off
as $fn$
#variable_conflict use_column
declare
  won_ids bigint[];
  won_parents bigint[];
  won_keys text[];
  won_statuses text[];
begin
  -- For a batch with keyed outcomes (a statement of its own transaction): the outcomes that leave
  -- their key's slot are taken out of their keys' holders below, and the key trigger skips them
  -- (version 27). Set before any row is written.
  if release_keys then
    perform set_config('gen_durable.completing', 'on', true);
  end if;

  with input as materialized (
    -- json, not jsonb: parsed once, without building a jsonb document of the whole batch first.
    select * from json_to_recordset(outcomes) as x(
      id bigint, token bigint, status text, step text, set_state boolean, state jsonb,
      run_at timestamptz, delay_ms double precision, priority integer, attempt_op text,
      result jsonb, error jsonb, await_spec jsonb, children_pending integer, joined boolean, rate_limited text,
      from_step text, to_step text, outcome text, attempt integer, duration_ms integer, hist_error jsonb,
      concurrency_key text, failure jsonb)
    order by id
  ),
  -- The batch's keys, locked in the one global order before any row is (see lock_keys).
  keys_locked as (select {{schema}}.lock_keys(array(select concurrency_key from input)) as n),
  won as (
    update {{schema}}.instances i set
      status = x.status,
      step = coalesce(x.step, i.step),
      -- json_to_recordset reads a JSON null (or a missing key) as SQL NULL: a state of null is stored as JSON null.
      state = case when x.set_state then coalesce(x.state, 'null'::jsonb) else i.state end,
      run_at = coalesce(x.run_at, now() + make_interval(secs => coalesce(x.delay_ms, 0) / 1000.0)),
      priority = coalesce(x.priority, i.priority),
      -- A step claimed ahead whose start was not marked yet is counted here (Leases.markStarted).
      attempt = case x.attempt_op when 'reset' then 0
                when 'refund' then greatest(i.attempt + i.claimed_ahead::int - 1, 0)
                else i.attempt + i.claimed_ahead::int end,
      claimed_ahead = false, ahead_returns = 0,
      result = x.result, error = x.error, await_spec = x.await_spec,
      -- A retry or snooze of the same step sees the same ctx.awaited; a new step starts empty.
      awaited = case when x.step is null then i.awaited end,
      resumed_by = case when x.step is null then i.resumed_by end,
      -- Set once, when the instance is routed to its onFailure step; kept after (routing happens once).
      failure = coalesce(x.failure, i.failure),
      joined = case when x.step is null then i.joined else coalesce(x.joined, false) end,
      children_pending = x.children_pending,
      rate_limited = x.rate_limited,
      -- Recognises this commit if its reply is lost (see committedBy in src/sql/claims.ts).
      committed_token = x.token,
      -- A step that finishes the instance keeps that transition here, not in transitions
      -- (version 20): the row already holds its step, attempt and time.
      done_duration_ms = case when x.outcome = 'done' then coalesce(x.duration_ms, 0) end,
      leased_by = null, lease_expires_at = null, updated_at = now()
    from input x
    -- The fence. "status || ''" keeps the planner off instances_lease (where status = 'running'):
    -- statistics that saw few running rows made it walk that index once per row.
    where i.id = x.id and i.claim_token = x.token and i.status || '' = 'running'
      and (select n from keys_locked) >= 0
    returning i.id, i.parent_id, i.concurrency_key, i.status,
              x.from_step, x.to_step, x.outcome, x.attempt as from_attempt, x.duration_ms, x.hist_error
  ),
  history as (
    insert into {{schema}}.transitions (instance_id, from_step, to_step, outcome, attempt, duration_ms, error)
    select w.id, w.from_step, w.to_step, w.outcome, w.from_attempt, w.duration_ms, w.hist_error
    -- A step postponed by its rate limit did not run: nothing to record. A done is in the row.
    from won w where w.outcome not in ('rate_limited', 'done')
  )
  select coalesce(array_agg(w.id), '{}'), coalesce(array_agg(w.parent_id), '{}'),
         coalesce(array_agg(w.concurrency_key), '{}'), coalesce(array_agg(w.status), '{}')
  into won_ids, won_parents, won_keys, won_statuses
  from won w;

  -- The outcomes that won and leave their key's slot (every status but runnable, which the
  -- trigger's upsert handles, and cancelled, whose key is handed back once its code settles),
  -- taken out of their keys' holders: one update per key. The keys were locked (lock_keys) before
  -- the rows, as the trigger's update ran after them. A statement of its own, so that a batch
  -- without keyed outcomes never names concurrency_keys (it takes no lock on that table).
  if release_keys then
    update {{schema}}.concurrency_keys c set holders = array(select h from unnest(c.holders) as h where h <> all(r.ids))
    from (
      select w.key, array_agg(w.id) as ids from unnest(won_ids, won_keys, won_statuses) as w(id, key, status)
      where w.key is not null and w.status not in ('runnable', 'cancelled')
      group by 1
    ) r
    where c.key = r.key;
  end if;

  return query select w.id::text, w.parent_id::text from unnest(won_ids, won_parents) as w(id, parent_id);
end
$fn$;
