-- gen-durable schema, version 16: signal() from SQL matches composite await specs (mode "tree",
-- `{ any: [{ event: "approve", count: 2 }, "reject"] }`) as engine.signal does.

-- The port of `need` in runtime/composite-spec.ts. `events` is the relevant mailbox (unconsumed
-- signals of the events the spec names) in arrival order; `available` are positions in it
-- (1-based, ascending) that `node` may still take. Returns the positions the node consumes when the
-- mailbox satisfies it (the largest of them is where it became satisfied), null when it does not:
--   a pack { event, count } takes the oldest `count` available signals of its event;
--   { any } takes the alternative satisfied earliest (the first listed on a tie);
--   { all } takes its members in turn, each from what the members before it left.
create function {{schema}}.match_tree(node jsonb, available integer[], events text[]) returns integer[]
language plpgsql immutable as $$
declare
  child jsonb;
  picked integer[];
  used integer[];
  best integer[];
  best_at integer;
  used_at integer;
  left_over integer[] := available;
begin
  if node ? 'event' then
    picked := array(select p from unnest(available) with ordinality a(p, o)
                    where events[p] = node ->> 'event' order by o limit (node ->> 'count')::integer);
    return case when cardinality(picked) = (node ->> 'count')::integer then picked end;
  end if;
  if node ? 'any' then
    for child in select c from jsonb_array_elements(node -> 'any') c loop
      used := {{schema}}.match_tree(child, available, events);
      if used is not null then
        used_at := (select max(p) from unnest(used) p);
        if best is null or used_at < best_at then
          best := used;
          best_at := used_at;
        end if;
      end if;
    end loop;
    return best;
  end if;
  picked := '{}';
  for child in select c from jsonb_array_elements(node -> 'all') c loop
    used := {{schema}}.match_tree(child, left_over, events);
    if used is null then
      return null;
    end if;
    left_over := array(select p from unnest(left_over) with ordinality a(p, o) where p <> all(used) order by o);
    picked := picked || used;
  end loop;
  return picked;
end
$$;

-- try_resume of version 10 with mode "tree" added; modes one, any, all and pack unchanged.
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
    -- The mailbox matchSpec reads (sql/signals.ts `mailbox`), then the tree over it.
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
           'insertedAt', to_char(s.inserted_at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"')) order by s.id)
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
  if resumed_queue is not null then
    perform pg_notify(channel, resumed_queue);
  end if;
  return resumed_queue;
end
$$;
