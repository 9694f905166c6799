-- gen-durable schema, version 18: the SQL API's insert and signal refuse a transaction stricter
-- than READ COMMITTED where they need it, as engine.insert and engine.signal refuse such a client.
--
-- Both lock a key or a row and then read what committed before the lock was granted: signal looks
-- for the key's live instance after the inbox lock (else it keeps the signal) and reads the
-- mailbox after the instance's lock; insert with a correlation key takes the signals kept for its
-- key (take_inbox) and, with ifExists, looks for a finished twin (correlation_prior) after the key's
-- lock. Under READ COMMITTED each of those reads sees what committed before it. Under REPEATABLE
-- READ or SERIALIZABLE they read the transaction's first snapshot and miss it, silently: a signal
-- kept in the inbox while its instance awaits it, a kept signal left in the inbox of the instance
-- just inserted, a second instance where ifExists "reuse" should have returned the first. So they
-- raise invalid_transaction_state (25000) instead, before they lock or write anything. An insert
-- without a correlation key runs at any level (with an idempotency key, a key remembered after the
-- snapshot makes the remembered-key upsert fail with a serialization failure: never a second row).
create function {{schema}}.require_read_committed(what text, why text) returns void
language plpgsql stable as $$
declare
  level text := current_setting('transaction_isolation');
begin
  if level not in ('read committed', 'read uncommitted') then
    raise exception using errcode = 'invalid_transaction_state',
      message = format('gen-durable: %s: the transaction is %s; gen-durable needs READ COMMITTED here: %s',
                       what, upper(level), why),
      hint = 'Call it in a READ COMMITTED transaction (Postgres'' default).';
  end if;
end
$$;

-- Version 10's insert, with the check before the keys' locks.
create or replace function {{schema}}.insert(machine text, state jsonb, options jsonb default '{}',
                                  out id bigint, out inserted boolean)
language plpgsql volatile as $$
#variable_conflict use_column
declare
  what constant text := 'insert';
  machine_name constant text := machine;
  def {{schema}}.machines%rowtype;
  o jsonb := coalesce(options, '{}'::jsonb);
  q text;
  prio integer;
  due_at timestamptz;
  attempts integer;
  ck text;
  kk text;
  ik text;
  if_exists text;
  window_ms double precision := {{schema}}.setting_number('idempotency_window_ms', 86400000);
  channel text := 'gen_durable_' || (select nspname from pg_namespace where oid = '{{schema}}'::regnamespace);
  prior bigint;
  prior_status text;
  new_state jsonb := coalesce(state, 'null'::jsonb);
begin
  perform {{schema}}.check_options(o, array['queue', 'priority', 'runAt', 'delay', 'maxAttempts', 'correlationKey',
    'concurrencyKey', 'idempotencyKey', 'ifExists'], what);
  select * into def from {{schema}}.machines m where m.name = machine_name;
  if not found then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('gen-durable: insert: unknown machine %s: machines are recorded when an engine that defines them starts on schema %s (engine.start())',
        coalesce(to_jsonb(machine_name)::text, 'null'), '{{schema}}');
  end if;
  q := coalesce({{schema}}.check_name(o -> 'queue', 'insert: queue'), def.queue);
  if o ? 'priority' then
    if jsonb_typeof(o -> 'priority') <> 'number' or (o ->> 'priority')::numeric <> trunc((o ->> 'priority')::numeric)
       or abs((o ->> 'priority')::numeric) > 2147483647 then
      raise exception using errcode = 'invalid_parameter_value',
        message = format('gen-durable: insert: priority must be an integer, got %s', left((o -> 'priority')::text, 80));
    end if;
    prio := (o ->> 'priority')::integer;
  end if;
  if o ? 'runAt' and o ? 'delay' then
    raise exception using errcode = 'invalid_parameter_value', message = 'gen-durable: insert: pass delay or runAt, not both';
  end if;
  if o ? 'runAt' then
    begin
      if jsonb_typeof(o -> 'runAt') <> 'string' then
        raise exception 'not a string';
      end if;
      due_at := (o ->> 'runAt')::timestamptz;
    exception when others then
      raise exception using errcode = 'invalid_parameter_value',
        message = format('gen-durable: insert: runAt must be a timestamp such as "2030-01-01T00:00:00Z", got %s', left((o -> 'runAt')::text, 80));
    end;
  elsif o ? 'delay' then
    due_at := now() + {{schema}}.duration_ms(o -> 'delay', 'insert: delay') * interval '1 millisecond';
  else
    due_at := now();
  end if;
  if o ? 'maxAttempts' then
    if jsonb_typeof(o -> 'maxAttempts') <> 'number' or (o ->> 'maxAttempts')::numeric <> trunc((o ->> 'maxAttempts')::numeric)
       or (o ->> 'maxAttempts')::numeric < 1 or (o ->> 'maxAttempts')::numeric > 1000000 then
      raise exception using errcode = 'invalid_parameter_value',
        message = format('gen-durable: insert: maxAttempts must be an integer from 1 to 1000000, got %s', left((o -> 'maxAttempts')::text, 80));
    end if;
    attempts := (o ->> 'maxAttempts')::integer;
  end if;
  ck := {{schema}}.check_key(o -> 'correlationKey', 'insert: correlationKey');
  kk := {{schema}}.check_key(o -> 'concurrencyKey', 'insert: concurrencyKey');
  ik := {{schema}}.check_key(o -> 'idempotencyKey', 'insert: idempotencyKey');
  if o ? 'ifExists' then
    if_exists := o ->> 'ifExists';
    if jsonb_typeof(o -> 'ifExists') <> 'string' or if_exists not in ('reuse', 'reject', 'allow') then
      raise exception using errcode = 'invalid_parameter_value',
        message = format('gen-durable: insert: ifExists must be "reuse", "reject" or "allow", got %s', left((o -> 'ifExists')::text, 80));
    end if;
    if ck is null then
      raise exception using errcode = 'invalid_parameter_value',
        message = 'gen-durable: insert: ifExists needs a correlationKey: it says what to do when an instance with that key exists';
    end if;
  end if;
  if ck is not null then
    perform {{schema}}.require_read_committed('insert',
      'an insert with a correlation key takes the signals kept for its key, and with ifExists looks for a '
      'finished instance with it, after locking the key; a stricter snapshot misses those committed in between');
  end if;

  -- Every key this insert may wait for, in the one global order (see lock_keys), before any row.
  perform {{schema}}.lock_keys(array[kk, 'idempotency:' || ik,
    case when if_exists in ('reuse', 'reject') then 'correlation:' || ck end]);
  if ik is not null then
    prior := {{schema}}.remembered_instance(ik);
    if prior is not null then
      id := prior;
      inserted := false;
      return;
    end if;
  end if;
  for tries in 1 .. 10 loop
    if if_exists in ('reuse', 'reject') then
      prior := {{schema}}.correlation_prior(ck, window_ms);
      if prior is not null then
        if if_exists = 'reject' then
          select i.status into prior_status from {{schema}}.instances i where i.id = prior;
          raise exception using errcode = 'unique_violation',
            message = format('gen-durable: insert: an instance with correlation key %s already exists (instance %s, %s) and ifExists is "reject"',
              to_jsonb(ck)::text, prior, coalesce(prior_status, 'pruned'));
        end if;
        id := prior;
        inserted := false;
        exit;
      end if;
    end if;
    insert into {{schema}}.instances as i (machine, step, state, queue, priority, run_at, max_attempts,
                                           correlation_key, concurrency_key, unvalidated)
    values (def.name, def.initial_step, new_state, q, coalesce(prio, 0), due_at, attempts, ck, kk, true)
    on conflict (correlation_key) where correlation_key is not null and status not in ('done', 'failed', 'cancelled')
    do nothing
    returning i.id into id;
    if id is not null then
      inserted := true;
      if ck is not null then
        perform {{schema}}.take_inbox(ck, id);
      end if;
      if due_at <= now() then
        perform pg_notify(channel, q);
      end if;
      exit;
    end if;
    -- A live twin: the conflict waited for it to commit, so this statement's snapshot sees it,
    -- unless it finished meanwhile (then the insert goes in on the next try).
    select i.id into id from {{schema}}.instances i
    where i.correlation_key = ck and i.status not in ('done', 'failed', 'cancelled');
    if id is not null then
      inserted := false;
      exit;
    end if;
  end loop;
  if id is null then
    raise exception 'gen-durable: insert: could not settle correlation key % after 10 rounds of concurrent inserts', ck;
  end if;
  if ik is not null then
    insert into {{schema}}.remembered_keys as r (kind, key, instance_id, expires_at)
    values ('idempotency', ik, id, now() + window_ms * interval '1 millisecond')
    on conflict (kind, key) do update set instance_id = excluded.instance_id, expires_at = excluded.expires_at;
  end if;
end
$$;

-- Version 10's signal, with the check before the locks.
create or replace function {{schema}}.signal(target text, event text, payload jsonb default null, options jsonb default '{}',
                                  out signal_id bigint, out instance_id bigint, out duplicate boolean)
language plpgsql volatile as $$
#variable_conflict use_column
declare
  o jsonb := coalesce(options, '{}'::jsonb);
  by_id boolean;
  dedup text;
  keep boolean;
  ev text;
  label text;
  target_id bigint;
  inst record;
  last_id bigint;
  last_status text;
  channel text := 'gen_durable_' || (select nspname from pg_namespace where oid = '{{schema}}'::regnamespace);
  body jsonb := coalesce(payload, 'null'::jsonb);
begin
  perform {{schema}}.check_options(o, array['dedupKey', 'ifMissing', 'byId'], 'signal');
  if o ? 'byId' and jsonb_typeof(o -> 'byId') <> 'boolean' then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('gen-durable: signal: byId must be true or false, got %s', left((o -> 'byId')::text, 80));
  end if;
  by_id := coalesce((o ->> 'byId')::boolean, false);
  if o ? 'ifMissing' and (jsonb_typeof(o -> 'ifMissing') <> 'string' or (o ->> 'ifMissing') not in ('error', 'keep')) then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('gen-durable: signal: ifMissing must be "error" or "keep", got %s', left((o -> 'ifMissing')::text, 80));
  end if;
  keep := coalesce(o ->> 'ifMissing', 'error') = 'keep';
  dedup := {{schema}}.check_key(o -> 'dedupKey', 'signal: dedupKey');
  if event is null or target is null then
    raise exception using errcode = 'invalid_parameter_value',
      message = 'gen-durable: signal: the target and the event are required';
  end if;
  ev := {{schema}}.check_name(to_jsonb(event), 'signal: event');
  if by_id then
    if keep then
      raise exception using errcode = 'invalid_parameter_value',
        message = 'gen-durable: signal: ifMissing "keep" needs a correlation key as target, not byId';
    end if;
    if target !~ '^[1-9][0-9]{0,18}$' then
      raise exception using errcode = 'invalid_parameter_value',
        message = format('gen-durable: signal: with byId the target must be an instance id, got %s', coalesce(to_jsonb(target)::text, 'null'));
    end if;
    target_id := target::bigint;
    label := target;
  else
    perform {{schema}}.check_key(to_jsonb(target), 'signal: the target correlation key');
    label := format('with correlation key %s', to_jsonb(target)::text);
  end if;

  perform {{schema}}.require_read_committed('signal',
    'a signal locks its key or its instance and then looks for the live instance and reads its mailbox; a '
    'stricter snapshot misses an instance or signals committed in between (the signal would be kept in the '
    'inbox, or an await never resume)');
  -- A kept signal must not slip past an insert of its key in flight: the key's lock, then look.
  if keep then
    perform pg_advisory_xact_lock(hashtextextended('gen_durable:inbox:' || target, 0));
  end if;
  -- The instance's concurrency key before its row (see lock_keys).
  if by_id then
    perform {{schema}}.lock_keys(array(select i.concurrency_key from {{schema}}.instances i where i.id = target_id));
    select i.id, i.status, i.queue, i.await_spec into inst from {{schema}}.instances i where i.id = target_id for update;
  else
    perform {{schema}}.lock_keys(array(select i.concurrency_key from {{schema}}.instances i
                                       where i.correlation_key = target and i.status not in ('done', 'failed', 'cancelled')));
    select i.id, i.status, i.queue, i.await_spec into inst from {{schema}}.instances i
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
    -- A retried webhook whose signal was already delivered is harmless, even after the instance finished.
    if last_id is not null and dedup is not null
       and exists (select 1 from {{schema}}.signals s where s.instance_id = last_id and s.dedup_key = dedup) then
      signal_id := null;
      instance_id := last_id;
      duplicate := true;
      return;
    end if;
    if keep then
      insert into {{schema}}.signals as s (instance_id, correlation_key, event, payload, dedup_key, expires_at)
      values (null, target, ev, body, dedup,
              now() + {{schema}}.setting_number('signal_retention_ms', 86400000) * interval '1 millisecond')
      on conflict do nothing
      returning s.id into signal_id;
      instance_id := null;
      duplicate := signal_id is null;
      return;
    end if;
    if last_id is not null then
      raise exception using errcode = 'object_not_in_prerequisite_state',
        message = format('gen-durable: signal: instance %s is already %s', label, last_status);
    end if;
    raise exception using errcode = 'no_data_found', message = format('gen-durable: signal: no instance %s', label);
  end if;

  insert into {{schema}}.signals as s (instance_id, correlation_key, event, payload, dedup_key, expires_at)
  values (inst.id, null, ev, body, dedup, null)
  on conflict do nothing
  returning s.id into signal_id;
  instance_id := inst.id;
  duplicate := signal_id is null;
  if inst.status = 'awaiting' and inst.await_spec is not null then
    perform {{schema}}.try_resume(inst.id, inst.await_spec, channel);
  elsif inst.status = 'runnable' then
    -- We hold its row lock until our commit, and a claim skips locked rows: wake its queue again with the commit.
    perform pg_notify(channel, inst.queue);
  end if;
end
$$;
