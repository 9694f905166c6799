-- gen-durable schema, version 37: a signal that completes an await on its own is stored consumed,
-- and a signal to an instance without a concurrency key locks its row in one statement.
--
-- A signal to an instance awaiting it was written twice: inserted into the mailbox (the table's
-- primary key, signals_instance, and signals_mailbox, which holds unconsumed signals), then read
-- back by try_resume, which built ctx.awaited from it and marked it consumed (a new row version:
-- the primary key and signals_instance again). When the instance awaits one event of several
-- ('one' or 'any') and nothing older it awaits waits in its mailbox, that signal is the one
-- try_resume would take, alone: store_signal now inserts it consumed and resumes the instance
-- with the values in hand. Every other case (packs, all-of, trees, an older signal waiting, an
-- instance not awaiting) stores it unconsumed and calls try_resume as before, so which signals
-- an await consumes, in what order, and what ctx.awaited holds do not change.
--
-- deliver_signal took the instance's concurrency key before its row (lock_keys: a statement and a
-- function call, to find that most instances have none), then looked the row up again to lock it.
-- An instance's concurrency key never changes, so one without any is locked by one statement that
-- only matches it; an instance with one (or none found) takes the path of version 22 unchanged.
--
-- Measured on Postgres 15, 900 signals by correlation key to instances awaiting "go", each
-- deliver_signal in one transaction (rolled back, the same rows for both), six alternating
-- pairs: 228-304 us a signal before (median 250), 172-248 after (median 187). Signals that only
-- enter a mailbox (200 instances awaiting packs of 25, 2,000 signals, four pairs): 95-116 us a
-- signal sent alone before, 78-106 after; in batches of eight, 87-109 before and 103-142 after,
-- the call of store_signal.
--
-- store_signal holds what deliver_signal and deliver_signals did alike for a live instance whose
-- row they hold: the batch now takes the same shortcut. It runs under their settings (generic
-- plans, no sequential scans: version 29).
create function {{schema}}.store_signal(instance bigint, instance_status text, instance_queue text, spec jsonb,
                                        signal_event text, signal_payload jsonb, dedup text,
                                        signal_trace_context jsonb, channel text,
                                        out signal_id bigint, out wake_queue text)
language plpgsql volatile as $$
declare
  signal_at timestamptz;
begin
  if instance_status = 'awaiting' and spec ->> 'mode' in ('one', 'any') and spec -> 'events' ? signal_event
     and not exists (select 1 from {{schema}}.signals s
                     where s.instance_id = instance and s.consumed_at is null
                       and s.event in (select jsonb_array_elements_text(spec -> 'events'))) then
    insert into {{schema}}.signals as s (instance_id, correlation_key, event, payload, dedup_key, expires_at,
                                         trace_context, consumed_at)
    values (instance, null, signal_event, signal_payload, dedup, null, signal_trace_context, now())
    on conflict do nothing
    returning s.id, s.inserted_at into signal_id, signal_at;
    -- A duplicate (its dedup key was seen) stores nothing and resumes nothing, as before.
    if signal_id is null then
      return;
    end if;
    -- As try_resume resumes, with ctx.awaited built as it builds it.
    with resumed as (
      update {{schema}}.instances i
      set status = 'runnable', run_at = now(), attempt = 0, updated_at = now(), await_spec = null,
          resumed_by = 'signal',
          awaited = jsonb_build_array(
            jsonb_build_object('id', signal_id::text, 'event', signal_event, 'payload', signal_payload,
              'insertedAt', to_char(signal_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
            || case when signal_trace_context is not null
                    then jsonb_build_object('traceContext', signal_trace_context) else '{}'::jsonb end)
      where i.id = instance and i.status = 'awaiting'
      returning i.id, i.step, i.queue
    ),
    history as (
      insert into {{schema}}.transitions (instance_id, from_step, to_step, outcome)
      select r.id, r.step, r.step, 'resumed' from resumed r
    )
    select r.queue into wake_queue from resumed r;
    if wake_queue is not null and channel is not null then
      perform pg_notify(channel, wake_queue);
    end if;
    return;
  end if;
  insert into {{schema}}.signals as s (instance_id, correlation_key, event, payload, dedup_key, expires_at, trace_context)
  values (instance, null, signal_event, signal_payload, dedup, null, signal_trace_context)
  on conflict do nothing
  returning s.id into signal_id;
  if instance_status = 'awaiting' and spec is not null then
    wake_queue := {{schema}}.try_resume(instance, spec, channel);
  elsif instance_status = 'runnable' then
    -- The caller holds its row lock until its commit, and a claim skips locked rows: wake its
    -- queue again with the commit.
    if channel is not null then
      perform pg_notify(channel, instance_queue);
    end if;
    wake_queue := instance_queue;
  end if;
end
$$;

-- Version 22's deliver_signal (its outcomes are described there), with the row of an instance
-- without a concurrency key locked in one statement, and the delivery in store_signal.
create or replace function {{schema}}.deliver_signal(by_id boolean, target text, event text, payload jsonb, dedup text,
                                          keep boolean, retention_ms double precision, trace_context jsonb,
                                          channel text, machine_is text, machine_not text[],
                                          out outcome text, out signal_id bigint, out instance_id bigint,
                                          out status text, out machine text, out wake_queue text)
language plpgsql volatile
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
#variable_conflict use_column
declare
  inst record;
  stored record;
  last_id bigint;
  last_status text;
begin
  -- A kept signal must not slip past an insert of its key in flight: the key's lock, then look.
  if keep and not by_id then
    perform pg_advisory_xact_lock(hashtextextended('gen_durable:inbox:' || target, 0));
  end if;
  -- An instance without a concurrency key has no key to take first (see lock_keys): its row.
  if by_id then
    select i.id, i.status, i.queue, i.await_spec, i.machine into inst from {{schema}}.instances i
    where i.id = target::bigint and i.concurrency_key is null for update;
  else
    select i.id, i.status, i.queue, i.await_spec, i.machine into inst from {{schema}}.instances i
    where i.correlation_key = target and i.status not in ('done', 'failed', 'cancelled') and i.concurrency_key is null
    for update;
  end if;
  -- Else its concurrency key before its row; the key never changes.
  if inst.id is null then
    if by_id then
      perform {{schema}}.lock_keys(array(select i.concurrency_key from {{schema}}.instances i
                                         where i.id = target::bigint));
      select i.id, i.status, i.queue, i.await_spec, i.machine into inst from {{schema}}.instances i
      where i.id = target::bigint for update;
    else
      perform {{schema}}.lock_keys(array(select i.concurrency_key from {{schema}}.instances i
                                         where i.correlation_key = target and i.status not in ('done', 'failed', 'cancelled')));
      select i.id, i.status, i.queue, i.await_spec, i.machine into inst from {{schema}}.instances i
      where i.correlation_key = target and i.status not in ('done', 'failed', 'cancelled') for update;
    end if;
  end if;

  if inst.id is null or inst.status in ('done', 'failed', 'cancelled') then
    if inst.id is not null then
      last_id := inst.id;
      last_status := inst.status;
    elsif not by_id then
      select i.id, i.status into last_id, last_status from {{schema}}.instances i
      where i.correlation_key = target order by i.id desc limit 1;
    end if;
    instance_id := last_id;
    status := last_status;
    -- A retried webhook whose signal was already delivered is harmless, even after the instance finished.
    if last_id is not null and dedup is not null
       and exists (select 1 from {{schema}}.signals s where s.instance_id = last_id and s.dedup_key = dedup) then
      outcome := 'duplicate';
      return;
    end if;
    if keep and not by_id then
      insert into {{schema}}.signals as s (instance_id, correlation_key, event, payload, dedup_key, expires_at, trace_context)
      values (null, target, event, payload, dedup, now() + retention_ms * interval '1 millisecond', trace_context)
      on conflict do nothing
      returning s.id into signal_id;
      outcome := 'kept';
      instance_id := null;
      status := null;
      return;
    end if;
    outcome := case when last_id is null then 'missing' else 'terminated' end;
    return;
  end if;

  instance_id := inst.id;
  status := inst.status;
  machine := inst.machine;
  if (machine_is is not null and inst.machine <> machine_is) or inst.machine = any(machine_not) then
    outcome := 'refused';
    return;
  end if;
  -- Assigned, not selected from: a function scan of its result cost a batch 15-20 us a signal.
  stored := {{schema}}.store_signal(inst.id, inst.status, inst.queue, inst.await_spec, event, payload, dedup,
                                    trace_context, channel);
  signal_id := stored.signal_id;
  wake_queue := stored.wake_queue;
  outcome := 'delivered';
end
$$;

-- Version 29's deliver_signals, with the delivery to a held live instance in store_signal.
create or replace function {{schema}}.deliver_signals(items jsonb)
returns table (idx integer, outcome text, signal_id bigint, instance_id bigint, status text, machine text,
               wake_queue text)
language plpgsql volatile
set plan_cache_mode = force_generic_plan
set enable_seqscan = off
as $$
declare
  ids bigint[] := array(select (e ->> 'target')::bigint from jsonb_array_elements(items) e
                        where (e ->> 'byId')::boolean);
  keys text[] := array(select e ->> 'target' from jsonb_array_elements(items) e
                       where not (e ->> 'byId')::boolean);
  -- The rows held, in three parallel arrays: a row's correlation key only while it is live, so
  -- that a key finds its live instance and never an older, finished one of the same key.
  held_ids bigint[];
  held_live_keys text[];
  held_live boolean[];
  it jsonb;
  r record;
  stored record;
  n integer := 0;
  pos integer;
  target_id bigint;
  target_status text;
  target_queue text;
  target_spec jsonb;
  target_machine text;
begin
  with held as (
    select i.id, i.correlation_key, i.status not in ('done', 'failed', 'cancelled') as live, i.concurrency_key
    from {{schema}}.instances i
    where i.id = any(ids) or (i.correlation_key = any(keys) and i.status not in ('done', 'failed', 'cancelled'))
    order by i.id
    for update skip locked
  )
  -- A row whose key someone holds stays locked until our commit, unused: its signal, sent alone,
  -- then takes the key and the row in order (see lock_keys), waiting for us at most.
  select array_agg(h.id), array_agg(case when h.live then h.correlation_key end), array_agg(h.live)
  into held_ids, held_live_keys, held_live from held h
  where h.concurrency_key is null
     or pg_try_advisory_xact_lock(hashtextextended('gen_durable:{{schema}}:key:' || h.concurrency_key, 0));
  for it in select e from jsonb_array_elements(items) e loop
    idx := n;
    n := n + 1;
    pos := case when (it ->> 'byId')::boolean then array_position(held_ids, (it ->> 'target')::bigint)
                else array_position(held_live_keys, it ->> 'target') end;
    outcome := null;
    signal_id := null;
    instance_id := null;
    status := null;
    machine := null;
    wake_queue := null;
    if pos is null then
      outcome := 'single';
    elsif not held_live[pos] then
      select * into r from {{schema}}.deliver_signal(true, held_ids[pos]::text, it ->> 'event',
        it -> 'payload', it ->> 'dedupKey', false, 0, nullif(it -> 'traceContext', 'null'::jsonb), it ->> 'channel',
        it ->> 'machineIs', array(select jsonb_array_elements_text(it -> 'machineNot')));
      outcome := r.outcome;
      signal_id := r.signal_id;
      instance_id := r.instance_id;
      status := r.status;
      machine := r.machine;
      wake_queue := r.wake_queue;
    else
      target_id := held_ids[pos];
      select i.status, i.queue, i.await_spec, i.machine into target_status, target_queue, target_spec, target_machine
      from {{schema}}.instances i where i.id = target_id;
      instance_id := target_id;
      status := target_status;
      machine := target_machine;
      if (it ->> 'machineIs' is not null and target_machine <> it ->> 'machineIs')
         or coalesce((it -> 'machineNot') ? target_machine, false) then
        outcome := 'refused';
      else
        stored := {{schema}}.store_signal(target_id, target_status, target_queue, target_spec, it ->> 'event',
                                          it -> 'payload', it ->> 'dedupKey',
                                          nullif(it -> 'traceContext', 'null'::jsonb), it ->> 'channel');
        signal_id := stored.signal_id;
        wake_queue := stored.wake_queue;
        outcome := 'delivered';
      end if;
    end if;
    return next;
  end loop;
end
$$;
