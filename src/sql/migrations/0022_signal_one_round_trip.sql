-- gen-durable schema, version 22: engine.signal delivers in one statement.
--
-- engine.signal ran one transaction of five round trips (begin, lock the instance, insert the
-- signal, read the mailbox back into Node and match it there, commit) and a sixth when it resumed.
-- Under load its backend spent more than half its time idle in that transaction, waiting for the
-- next statement, with the instance row locked. deliver_signal does the same work server-side, in
-- the same order, so engine.signal sends one statement, committed on its own (synchronous commit
-- as before: the reply comes after the commit). The payload's check against the target's machine,
-- which needed the locked row's machine in Node, is decided before the call: the engine passes the
-- machines whose schema refuses the payload, and nothing is stored for an instance of one of them.
--
-- The race with an await is closed as before: both sides lock the instance row, then read the
-- mailbox in a later statement; a VOLATILE function's statements each take a fresh snapshot under
-- READ COMMITTED, so a step that parked while this call waited for the row is seen, and a signal
-- committed before an await locked the row is in the mailbox it reads.

-- try_resume of version 16, with the sender's trace context in ctx.awaited (as the engine's own
-- resume writes it: the resumed step's span links to each sender), and no NOTIFY without a channel.
create or replace function {{schema}}.try_resume(instance bigint, spec jsonb, channel text) returns text
language plpgsql volatile as $$
declare
  mode text := spec ->> 'mode';
  wanted text[] := array(select jsonb_array_elements_text(spec -> 'events'));
  matched bigint[];
  mailbox_ids bigint[];
  mailbox_events text[];
  positions integer[];
  consumed jsonb;
  resumed_queue text;
begin
  if mode in ('one', 'any') then
    matched := array(select s.id from {{schema}}.signals s
                     where s.instance_id = instance and s.event = any(wanted) and s.consumed_at is null
                     order by s.id limit 1);
    if cardinality(matched) < 1 then return null; end if;
  elsif mode = 'pack' then
    matched := array(select s.id from {{schema}}.signals s
                     where s.instance_id = instance and s.event = any(wanted) and s.consumed_at is null
                     order by s.id limit (spec ->> 'count')::integer);
    if cardinality(matched) < (spec ->> 'count')::integer then return null; end if;
  elsif mode = 'all' then
    matched := array(select min(s.id) from {{schema}}.signals s
                     where s.instance_id = instance and s.event = any(wanted) and s.consumed_at is null
                     group by s.event order by 1);
    if cardinality(matched) < cardinality(wanted) then return null; end if;
  elsif mode = 'tree' then
    select coalesce(array_agg(s.id order by s.id), '{}'), coalesce(array_agg(s.event order by s.id), '{}')
    into mailbox_ids, mailbox_events
    from {{schema}}.signals s
    where s.instance_id = instance and s.event = any(wanted) and s.consumed_at is null;
    positions := {{schema}}.match_tree(spec -> 'tree',
                                       array(select generate_series(1, cardinality(mailbox_ids))), mailbox_events);
    if positions is null then return null; end if;
    matched := array(select mailbox_ids[p] from unnest(positions) p order by p);
  else
    return null;
  end if;
  select jsonb_agg(jsonb_build_object('id', s.id::text, 'event', s.event, 'payload', s.payload,
           'insertedAt', to_char(s.inserted_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"'))
           || case when s.trace_context is not null then jsonb_build_object('traceContext', s.trace_context)
                   else '{}'::jsonb end
           order by s.id)
  into consumed from {{schema}}.signals s where s.id = any(matched);
  update {{schema}}.signals set consumed_at = now() where id = any(matched);
  with resumed as (
    update {{schema}}.instances
    set status = 'runnable', run_at = now(), awaited = consumed, await_spec = null, attempt = 0, updated_at = now(),
        resumed_by = 'signal'
    where id = instance and status = 'awaiting'
    returning id, step, queue
  ),
  history as (
    insert into {{schema}}.transitions (instance_id, from_step, to_step, outcome)
    select r.id, r.step, r.step, 'resumed' from resumed r
  )
  select r.queue into resumed_queue from resumed r;
  if resumed_queue is not null and channel is not null then
    perform pg_notify(channel, resumed_queue);
  end if;
  return resumed_queue;
end
$$;

-- engine.signal's delivery (runtime/signals.ts), its arguments already checked by the engine.
-- `target` is a correlation key, or an instance id when by_id. Outcomes:
--   'delivered'   stored in the live instance's mailbox (signal_id null: its dedup key was seen);
--                 wake_queue is its queue when this resumed it, or when it was runnable (a claim
--                 that skipped the row while we held its lock may have left it to the next poll);
--   'kept'        no live instance and keep: stored in the key's inbox (signal_id null: dedup);
--   'duplicate'   no live instance, but the last one already got this dedup key;
--   'terminated'  the last instance is finished (status): nothing stored;
--   'missing'     no instance at all: nothing stored;
--   'refused'     the live instance's machine (`machine`) is not `machine_is` (when given), or is
--                 one of `machine_not` (machines whose signal schema the engine found refuses the
--                 payload): nothing stored, the engine raises its error.
create function {{schema}}.deliver_signal(by_id boolean, target text, event text, payload jsonb, dedup text,
                                          keep boolean, retention_ms double precision, trace_context jsonb,
                                          channel text, machine_is text, machine_not text[],
                                          out outcome text, out signal_id bigint, out instance_id bigint,
                                          out status text, out machine text, out wake_queue text)
language plpgsql volatile as $$
#variable_conflict use_column
declare
  inst record;
  last_id bigint;
  last_status text;
begin
  -- A kept signal must not slip past an insert of its key in flight: the key's lock, then look.
  if keep and not by_id then
    perform pg_advisory_xact_lock(hashtextextended('gen_durable:inbox:' || target, 0));
  end if;
  -- The instance's concurrency key before its row (see lock_keys); the key never changes.
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
  insert into {{schema}}.signals as s (instance_id, correlation_key, event, payload, dedup_key, expires_at, trace_context)
  values (inst.id, null, event, payload, dedup, null, trace_context)
  on conflict do nothing
  returning s.id into signal_id;
  outcome := 'delivered';
  if inst.status = 'awaiting' and inst.await_spec is not null then
    wake_queue := {{schema}}.try_resume(inst.id, inst.await_spec, channel);
  elsif inst.status = 'runnable' then
    -- We hold its row lock until our commit, and a claim skips locked rows: wake its queue again with the commit.
    if channel is not null then
      perform pg_notify(channel, inst.queue);
    end if;
    wake_queue := inst.queue;
  end if;
end
$$;

-- engine.signal on the pool (runtime/signals.ts SignalSender): one signal, or the signals an engine
-- sent while others were in flight, in one statement and one commit. `items` is a JSON array of
-- deliver_signal's arguments ({ byId, target, event, payload, dedupKey, traceContext, channel,
-- machineIs, machineNot }; no keep). It never waits for an instance's row or concurrency key, so
-- it cannot be part of a deadlock through them: it locks the targets' rows in id order skipping
-- any locked by someone else (an await's commit, a caller's transaction), then tries their
-- concurrency keys; each item whose row (and key) it holds is then delivered by deliver_signal,
-- in the order given, which finds them already locked. Any other item (its row or key locked, no live instance) comes back with outcome
-- 'single', nothing stored: the engine sends it alone (deliver_signal), where it waits its turn.
-- Returns one row per item, `idx` its 0-based position.
create function {{schema}}.deliver_signals(items jsonb)
returns table (idx integer, outcome text, signal_id bigint, instance_id bigint, status text, machine text,
               wake_queue text)
language plpgsql volatile as $$
declare
  ids bigint[] := array(select (e ->> 'target')::bigint from jsonb_array_elements(items) e
                        where (e ->> 'byId')::boolean);
  keys text[] := array(select e ->> 'target' from jsonb_array_elements(items) e
                       where not (e ->> 'byId')::boolean);
  held_ids bigint[];
  held_keys text[];
  it jsonb;
  r record;
  n integer := 0;
begin
  with held as (
    select i.id, i.correlation_key, i.status, i.concurrency_key from {{schema}}.instances i
    where i.id = any(ids) or (i.correlation_key = any(keys) and i.status not in ('done', 'failed', 'cancelled'))
    order by i.id
    for update skip locked
  )
  -- A row whose key someone holds stays locked until our commit, unused: its signal, sent alone,
  -- then takes the key and the row in order (see lock_keys), waiting for us at most.
  select array_agg(h.id), array_agg(h.correlation_key) filter (where h.status not in ('done', 'failed', 'cancelled'))
  into held_ids, held_keys from held h
  where h.concurrency_key is null
     or pg_try_advisory_xact_lock(hashtextextended('gen_durable:{{schema}}:key:' || h.concurrency_key, 0));
  for it in select e from jsonb_array_elements(items) e loop
    idx := n;
    n := n + 1;
    if ((it ->> 'byId')::boolean and (it ->> 'target')::bigint = any(held_ids))
       or (not (it ->> 'byId')::boolean and (it ->> 'target') = any(held_keys)) then
      select * into r from {{schema}}.deliver_signal((it ->> 'byId')::boolean, it ->> 'target', it ->> 'event',
        it -> 'payload', it ->> 'dedupKey', false, 0, nullif(it -> 'traceContext', 'null'::jsonb), it ->> 'channel',
        it ->> 'machineIs', array(select jsonb_array_elements_text(it -> 'machineNot')));
      outcome := r.outcome;
      signal_id := r.signal_id;
      instance_id := r.instance_id;
      status := r.status;
      machine := r.machine;
      wake_queue := r.wake_queue;
    else
      outcome := 'single';
      signal_id := null;
      instance_id := null;
      status := null;
      machine := null;
      wake_queue := null;
    end if;
    return next;
  end loop;
end
$$;
