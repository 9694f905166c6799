-- gen-durable schema, version 24: an insert from SQL gives its concurrency key the machine's limit.
--
-- A definition's `concurrency: { key, limit: N }` applies N to every key its instances carry, a key
-- passed on the call included. An insert from SQL took its key with no limit (1), and a key's row
-- takes its limit from the instance that last became runnable under it: while such a row was the
-- latest, the key ran one step at a time on every node. Engines now record each machine's limit
-- with it (null: 1), and a row inserted from SQL with a concurrency key takes it.
alter table {{schema}}.machines add column concurrency_limit integer
  check (concurrency_limit is null or concurrency_limit between 2 and 100000);

create function {{schema}}.sql_insert_concurrency_limit() returns trigger
language plpgsql as $$
begin
  new.concurrency_limit := (select m.concurrency_limit from {{schema}}.machines m where m.name = new.machine);
  return new;
end
$$;

-- Only rows inserted from SQL are unvalidated; the engine's own inserts carry their limit already.
-- A BEFORE trigger: the key's row (the AFTER trigger of version 2) then sees the limit.
create trigger instances_sql_concurrency_limit before insert on {{schema}}.instances
  for each row when (new.unvalidated and new.concurrency_key is not null and new.concurrency_limit is null)
  execute function {{schema}}.sql_insert_concurrency_limit();
