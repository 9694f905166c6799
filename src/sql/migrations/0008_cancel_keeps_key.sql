-- gen-durable schema, version 8: a cancelled step keeps its concurrency key until it stops.
--
-- Cancelling an instance aborts its running step through ctx.abortSignal, but the abort is
-- advisory: code that ignores it runs on. If the key were freed at once, the key's next instance
-- would run beside it, which is what a concurrency key exists to prevent. So a running step that
-- is cancelled keeps its key's holder: the node that runs it hands the key back when the step's
-- code has settled, and the reaper when its lease expires (a cancel keeps the row's lease; a dead
-- or frozen node stops renewing it). Every other way out of `running` frees the key at once, as
-- before: an outcome committed by the step itself, the reaper, a graceful release.
create or replace function {{schema}}.concurrency_key_changed() returns trigger
language plpgsql as $$
declare
  k text := new.concurrency_key;
  was_runnable boolean := false;
  was_running boolean := false;
begin
  if tg_op = 'UPDATE' then
    was_runnable := old.status = 'runnable';
    was_running := old.status = 'running';
  end if;
  if was_runnable then
    perform 1 from {{schema}}.concurrency_keys where key = k for update;
    update {{schema}}.concurrency_keys c set
      holder = case when new.status = 'running' then new.id else c.holder end,
      (queue, run_at) = (select i.queue, i.run_at from {{schema}}.instances i
                         where i.concurrency_key = k and i.status = 'runnable' order by i.run_at, i.id limit 1),
      priority = (select i.priority from {{schema}}.instances i
                  where i.concurrency_key = k and i.status = 'runnable' order by i.priority, i.run_at, i.id limit 1)
    where c.key = k;
  elsif new.status = 'runnable' then
    insert into {{schema}}.concurrency_keys as c (key, holder, queue, priority, run_at)
    values (k, null, new.queue, new.priority, new.run_at)
    on conflict (key) do update set
      holder = case when was_running then null else c.holder end,
      queue = case when c.run_at is null or new.run_at < c.run_at then new.queue else c.queue end,
      priority = least(coalesce(c.priority, new.priority), new.priority),
      run_at = least(coalesce(c.run_at, new.run_at), new.run_at);
  elsif was_running and new.status <> 'cancelled' then
    update {{schema}}.concurrency_keys set holder = null where key = k;
  end if;
  return null;
end
$$;
