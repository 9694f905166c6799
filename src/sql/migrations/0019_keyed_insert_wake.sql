-- gen-durable schema, version 19: an instance inserted with a concurrency key and a later run time
-- wakes its queue with its commit.
--
-- A claim skips locked rows, concurrency keys' rows included. Inserting a keyed instance locks
-- its key's row (the trigger of version 2 upserts it) until the insert commits, so a claim that
-- ran meanwhile passed over the key's instances that were due. A due insert wakes its queue
-- anyway; one due later did not, and the key's due instances waited for the next poll. Every
-- insert path (engine.insert, ctx.spawn, cron, the SQL insert) goes through this trigger; the
-- NOTIFY goes out with the commit, once per queue and transaction.
create function {{schema}}.keyed_insert_wake() returns trigger
language plpgsql as $$
begin
  perform pg_notify('gen_durable_' || tg_table_schema, new.queue);
  return null;
end
$$;

create trigger instances_keyed_insert_wake after insert on {{schema}}.instances
  for each row when (new.concurrency_key is not null and new.status = 'runnable' and new.run_at > now())
  execute function {{schema}}.keyed_insert_wake();
