-- gen-durable schema, version 17: a concurrency key runs up to N steps of its instances at once
-- (a definition's `concurrency: { key, limit: N }`), not only one.
--
-- An instance carries the limit of its key (null: 1, every instance inserted before this version
-- and every key given without a definition's limit). The key's row in concurrency_keys keeps the
-- limit (max_running, from the instance that last became runnable under the key) and the instances
-- holding it (holders: running steps, and cancelled ones whose code has not settled, as `holder`
-- did). A claim takes a key while holders are fewer than max_running; the trigger appends the
-- claimed instance under the key row's lock and refuses a holder beyond the limit, so the database
-- enforces the limit whatever a node does. With limit 1 every statement does what it did with
-- `holder`: one element or none.
alter table {{schema}}.instances add column concurrency_limit integer
  check (concurrency_limit is null or concurrency_limit between 2 and 100000);

alter table {{schema}}.concurrency_keys
  add column max_running integer not null default 1,
  add column holders bigint[] not null default '{}';
update {{schema}}.concurrency_keys set holders = array[holder] where holder is not null;
drop index {{schema}}.concurrency_keys_claim;
alter table {{schema}}.concurrency_keys drop column holder;
create index concurrency_keys_claim on {{schema}}.concurrency_keys (queue, priority, run_at)
  where cardinality(holders) < max_running and run_at is not null;

-- The unique index allowed one running row per key; the limit is now the key row's, checked by
-- the trigger below when a row starts running.
drop index {{schema}}.instances_key_running;

-- Version 8's trigger with holders for holder: a claim appends, leaving `running` removes (except
-- to cancelled: the hold stays until the step's code settles, see version 8), and the limit is
-- checked when a holder is added.
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
                         where i.concurrency_key = k and i.status = 'runnable' order by i.run_at, i.id limit 1),
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
