-- gen-durable schema, version 10: the SQL API (insert and signal from SQL) and remembered keys
-- (idempotent inserts, correlation keys refused or reused after their instance finished).

-- ---------------------------------------------------------------- what SQL callers need to know
-- The machines the engines define, recorded by every engine when it starts: a row inserted from
-- SQL takes its initial step and default queue from here, as engine.insert takes them from the
-- definition. The last engine to start wins (all engines of one deployment define the same).
create table {{schema}}.machines (
  name         text        primary key,
  kind         text        not null check (kind in ('machine', 'job')),
  initial_step text        not null,
  queue        text        not null,
  updated_at   timestamptz not null default now()
);

-- Engine options the SQL functions follow (signal_retention_ms, idempotency_window_ms), recorded
-- by every engine when it starts. Absent: the engine's defaults.
create table {{schema}}.settings (
  name       text        primary key,
  value      jsonb       not null,
  updated_at timestamptz not null default now()
);

-- Set on rows inserted from SQL: their state (or args) has not met the machine's schema yet. The
-- node that claims such a row validates it first, writes back the schema's output and clears the
-- flag; a state the schema refuses fails the instance with a ValidationError. Rows inserted by
-- engine.insert were validated before they were written and never carry it.
alter table {{schema}}.instances add column unvalidated boolean not null default false;

-- ---------------------------------------------------------------- remembered keys
-- kind 'idempotency': an insert's idempotencyKey names the instance it created (or found) until
-- expires_at (the insert's time + idempotencyWindow), even once that instance is finished or pruned.
-- kind 'correlation': a finished instance with a correlation key, pruned by the GC before the
-- window ran out (retention shorter than the window): ifExists "reuse" / "reject" still see it.
-- The GC deletes expired rows.
create table {{schema}}.remembered_keys (
  kind        text        not null check (kind in ('idempotency', 'correlation')),
  key         text        not null,
  instance_id bigint      not null,
  expires_at  timestamptz not null,
  primary key (kind, key)
);
create index remembered_keys_expiry on {{schema}}.remembered_keys (expires_at);

-- The setting `name` (a number), or `fallback` when no engine recorded it.
create function {{schema}}.setting_number(name text, fallback double precision) returns double precision
language sql stable as $$
  select coalesce((select (s.value #>> '{}')::double precision from {{schema}}.settings s where s.name = $1), $2)
$$;

-- The instance an idempotency key names, while it is remembered. Called after the key's lock
-- (lock_keys with 'idempotency:' || key) and VOLATILE, so it reads with a fresh snapshot: a
-- twin committed while the caller's statement waited for the lock is seen.
create function {{schema}}.remembered_instance(idempotency_key text) returns bigint
language plpgsql volatile as $$
begin
  return (select r.instance_id from {{schema}}.remembered_keys r
          where r.kind = 'idempotency' and r.key = idempotency_key and r.expires_at > now());
end
$$;

-- For ifExists "reuse" / "reject": the newest instance with this correlation key that is live or
-- finished less than window_ms ago, else one the GC pruned within that window. Called after the
-- key's lock (lock_keys with 'correlation:' || key), with a fresh snapshot (VOLATILE).
create function {{schema}}.correlation_prior(correlation_key text, window_ms double precision) returns bigint
language plpgsql volatile as $$
declare
  found_id bigint;
begin
  select i.id into found_id from {{schema}}.instances i
  where i.correlation_key = correlation_prior.correlation_key
    and (i.status not in ('done', 'failed', 'cancelled') or i.updated_at > now() - window_ms * interval '1 millisecond')
  order by i.id desc limit 1;
  if found_id is null then
    select r.instance_id into found_id from {{schema}}.remembered_keys r
    where r.kind = 'correlation' and r.key = correlation_prior.correlation_key and r.expires_at > now();
  end if;
  return found_id;
end
$$;

-- ---------------------------------------------------------------- argument checks
-- The rules of names.ts, raised as invalid_parameter_value naming the function and the option.
create function {{schema}}.check_name(value jsonb, what text) returns text
language plpgsql immutable as $$
declare
  t text;
begin
  if value is null or jsonb_typeof(value) = 'null' then
    return null;
  end if;
  t := value #>> '{}';
  if jsonb_typeof(value) <> 'string' or length(t) = 0 or length(t) > 200 or btrim(t) <> t or t ~ '[\x01-\x1f]' then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('gen-durable: %s must be a non-empty string of at most 200 characters without control characters or surrounding spaces, got %s', what, left(value::text, 80));
  end if;
  return t;
end
$$;

create function {{schema}}.check_key(value jsonb, what text) returns text
language plpgsql immutable as $$
begin
  if value is null or jsonb_typeof(value) = 'null' then
    return null;
  end if;
  if jsonb_typeof(value) <> 'string' or length(value #>> '{}') = 0 or length(value #>> '{}') > 1000 then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('gen-durable: %s must be a non-empty string of at most 1000 characters, got %s', what, left(value::text, 80));
  end if;
  return value #>> '{}';
end
$$;

-- A duration as durations are written in TypeScript: milliseconds (a number >= 0) or "250ms", "30s", "5m", "2h", "1d".
create function {{schema}}.duration_ms(value jsonb, what text) returns double precision
language plpgsql immutable as $$
declare
  m text[];
  ms double precision;
begin
  if jsonb_typeof(value) = 'number' and (value #>> '{}')::double precision >= 0 then
    ms := (value #>> '{}')::double precision;
  elsif jsonb_typeof(value) = 'string' then
    m := regexp_match(value #>> '{}', '^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$');
    if m is not null then
      ms := m[1]::double precision * case coalesce(m[2], 'ms')
        when 'ms' then 1 when 's' then 1000 when 'm' then 60000 when 'h' then 3600000 else 86400000 end;
    end if;
  end if;
  if ms is null then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('gen-durable: %s must be a duration (milliseconds >= 0 or a string like "30s", "5m", "2h"), got %s', what, left(value::text, 80));
  end if;
  if ms > 100 * 365 * 86400000.0 then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('gen-durable: %s must be at most 100 years, got %s ms', what, ms);
  end if;
  return ms;
end
$$;

-- Raises unless `options` is an object whose keys are all in `allowed`.
create function {{schema}}.check_options(options jsonb, allowed text[], what text) returns void
language plpgsql immutable as $$
declare
  k text;
begin
  if jsonb_typeof(options) <> 'object' then
    raise exception using errcode = 'invalid_parameter_value',
      message = format('gen-durable: %s options must be a JSON object, got %s', what, left(options::text, 80));
  end if;
  for k in select jsonb_object_keys(options) loop
    if not (k = any(allowed)) then
      raise exception using errcode = 'invalid_parameter_value',
        message = format('gen-durable: %s: unknown option %s (the options are %s)', what, to_jsonb(k)::text, array_to_string(allowed, ', '));
    end if;
  end loop;
end
$$;

-- ---------------------------------------------------------------- insert
-- engine.insert from SQL, in the caller's transaction: same defaults, same keys, same wake-up
-- (NOTIFY on the queue with the commit when the row is due). Returns the instance's id and
-- whether it was inserted (false: a live twin with its correlation key, an idempotency key seen
-- within the window, or ifExists "reuse" found one). The state is validated by the engine when
-- the row is claimed.
create function {{schema}}.insert(machine text, state jsonb, options jsonb default '{}',
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

-- ---------------------------------------------------------------- signal
-- With the instance row locked and awaiting `spec`: if the mailbox satisfies it, consume the
-- signals and make the instance runnable at the step it parked for (NOTIFY with the commit).
-- The rules of matchSpec (runtime/await-spec.ts) and the statement `resume` (sql/signals.ts).
-- Returns the instance's queue when resumed.
create function {{schema}}.try_resume(instance bigint, spec jsonb, channel text) returns text
language plpgsql volatile as $$
declare
  mode text := spec ->> 'mode';
  wanted text[] := array(select jsonb_array_elements_text(spec -> 'events'));
  matched bigint[];
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
  else
    return null;
  end if;
  select jsonb_agg(jsonb_build_object('id', s.id::text, 'event', s.event, 'payload', s.payload,
           'insertedAt', to_char(s.inserted_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')) order by s.id)
  into consumed from {{schema}}.signals s where s.id = any(matched);
  update {{schema}}.signals set consumed_at = now() where id = any(matched);
  with resumed as (
    update {{schema}}.instances
    set status = 'runnable', run_at = now(), awaited = consumed, await_spec = null, attempt = 0, updated_at = now()
    where id = instance and status = 'awaiting'
    returning id, step, queue
  ),
  history as (
    insert into {{schema}}.transitions (instance_id, from_step, to_step, outcome)
    select r.id, r.step, r.step, 'resumed' from resumed r
  )
  select r.queue into resumed_queue from resumed r;
  if resumed_queue is not null then
    perform pg_notify(channel, resumed_queue);
  end if;
  return resumed_queue;
end
$$;

-- engine.signal from SQL, in the caller's transaction: `target` is a correlation key (or, with
-- the option byId, an instance id). Options: dedupKey, ifMissing ("error" or "keep"), byId.
-- Returns the stored signal's id (null when its dedup key was seen before), the instance it went
-- to (null when kept in the key's inbox) and whether it was a duplicate.
create function {{schema}}.signal(target text, event text, payload jsonb default null, options jsonb default '{}',
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
