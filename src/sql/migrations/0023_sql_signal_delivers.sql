-- gen-durable schema, version 23: the SQL API's signal() delivers through deliver_signal.
--
-- Until now signal() (versions 10 and 18) and deliver_signal (version 22, engine.signal's
-- statement) each carried their own copy of the delivery: the inbox lock of a kept signal, the
-- concurrency key before the row, the live instance or the last one, the dedup check on a finished
-- instance, the mailbox insert, the resume. signal() keeps its checks of its arguments and its
-- errors, and leaves the delivery to deliver_signal, so the two can no longer drift apart.
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
  r record;
  channel text := 'gen_durable_' || (select nspname from pg_namespace where oid = '{{schema}}'::regnamespace);
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
    label := target;
  else
    perform {{schema}}.check_key(to_jsonb(target), 'signal: the target correlation key');
    label := format('with correlation key %s', to_jsonb(target)::text);
  end if;

  perform {{schema}}.require_read_committed('signal',
    'a signal locks its key or its instance and then looks for the live instance and reads its mailbox; a '
    'stricter snapshot misses an instance or signals committed in between (the signal would be kept in the '
    'inbox, or an await never resume)');
  select * into r from {{schema}}.deliver_signal(by_id, target, ev, coalesce(payload, 'null'::jsonb), dedup, keep,
    {{schema}}.setting_number('signal_retention_ms', 86400000), null, channel, null, '{}');
  case r.outcome
    when 'delivered', 'kept' then
      signal_id := r.signal_id;
      instance_id := r.instance_id;
      -- Stored nothing: its dedup key was seen in that mailbox or inbox.
      duplicate := r.signal_id is null;
    when 'duplicate' then
      signal_id := null;
      instance_id := r.instance_id;
      duplicate := true;
    when 'terminated' then
      raise exception using errcode = 'object_not_in_prerequisite_state',
        message = format('gen-durable: signal: instance %s is already %s', label, r.status);
    when 'missing' then
      raise exception using errcode = 'no_data_found', message = format('gen-durable: signal: no instance %s', label);
    -- 'refused' needs a machine to check against, and signal() names none.
    else
      raise exception 'gen-durable: signal: unexpected delivery outcome %', r.outcome;
  end case;
end
$$;
