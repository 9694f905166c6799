-- gen-durable schema, version 29: signals are delivered with plans made once per session, and a
-- batch delivers to the rows it locked without looking them up again.
--
-- deliver_signals (version 22) locks its targets' rows with one query whose parameters are the
-- batch's instance ids and correlation keys. Postgres plans such a statement anew for each call
-- (a custom plan) until a generic plan is estimated no dearer, and this one's never is: a custom
-- plan knows that one of the two lists is empty. So every batch paid a plan of its lock query,
-- and of the statements of the functions it calls, planned under the same choice. deliver_signal
-- (a signal sent alone, and the SQL API's signal()) paid the same for its own statements.
--
-- Both now run with generic plans (plan_cache_mode = force_generic_plan, as claim_rows does since
-- version 21). A SET clause scopes a setting to the function and the functions it calls
-- (try_resume, match_tree): nothing else on the connection sees it. Every statement they run is
-- a lookup by primary key, by live correlation key or by the mailbox index (instance, event), so
-- one plan fits every call; but a plan kept for the session is made once, and one made while a
-- table was nearly empty (a new schema, statistics not gathered yet) scans the whole table until
-- something replans it (a vacuum or ANALYZE of the table, never on a server with autovacuum
-- off). enable_seqscan = off keeps them on their indexes: measured on
-- a new schema, 200 instances awaiting packs of 25, try_resume took 208 us a call with generic
-- plans made when the mailbox was empty, and 63 with this setting.
--
-- The delivery to a live instance whose row the batch holds now runs in deliver_signals, in the
-- order deliver_signal runs it (the machine check, the mailbox insert, the resume or the queue's
-- wake), without calling deliver_signal, which took the instance's concurrency key and row lock
-- again and looked the instance up by its key a second time. A held row of a finished instance
-- (a signal by id to it: terminated, or a duplicate) still goes through deliver_signal. The
-- instance's status is read before each item: an earlier item of the batch may have resumed it.
-- Same signatures, same rows returned: nodes of versions 22 and up call them unchanged.
--
-- Measured server-side on one connection (200 instances awaiting packs of 25, batches of four,
-- statistics gathered): 780 us a batch before; 479 with generic plans; 311-352 with the delivery
-- below as well. A signal sent alone: 0.37 ms of execution, 0.29 now.
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
        insert into {{schema}}.signals as s (instance_id, correlation_key, event, payload, dedup_key, expires_at, trace_context)
        values (target_id, null, it ->> 'event', it -> 'payload', it ->> 'dedupKey', null,
                nullif(it -> 'traceContext', 'null'::jsonb))
        on conflict do nothing
        returning s.id into signal_id;
        outcome := 'delivered';
        if target_status = 'awaiting' and target_spec is not null then
          wake_queue := {{schema}}.try_resume(target_id, target_spec, it ->> 'channel');
        elsif target_status = 'runnable' then
          -- We hold its row lock until our commit, and a claim skips locked rows: wake its queue again with the commit.
          if it ->> 'channel' is not null then
            perform pg_notify(it ->> 'channel', target_queue);
          end if;
          wake_queue := target_queue;
        end if;
      end if;
    end if;
    return next;
  end loop;
end
$$;

alter function {{schema}}.deliver_signal(boolean, text, text, jsonb, text, boolean, double precision, jsonb, text,
                                         text, text[])
  set plan_cache_mode = force_generic_plan
  set enable_seqscan = off;
