-- gen-durable schema, version 31: instances_machine holds only the rows that stay put.
--
-- instances_machine (machine, id) held every row version of the table. A job's row is written
-- three times (inserted runnable, claimed running, finished done), none of them in place (each
-- changes the status that the partial indexes' predicates read), so each version entered every
-- index over the whole table: three entries of this one per job, for the lists that filter by
-- machine. Now it holds awaiting, joining and finished rows only; a job enters it once, when it
-- finishes. Measured on Postgres 15 with fsync on, 30,000 queued no-op jobs at concurrency 32,
-- four runs each, the index swapped after setup: WAL written while processing 1,312 -> 1,192 bytes
-- a job, Postgres CPU 27.8 -> 25.4 us a job, 27,500 -> 29,800 jobs/s.
--
-- A machine's runnable and running rows are read through their status's own index
-- (instances_claim, instances_key_runnable, instances_lease) and filtered by machine: O(rows in
-- that status), the work in flight, never O(table). src/sql/by-machine.ts states the branches.
-- The claim never used this index (it reads `machine || ''`), so claims do not change.
--
-- The index is rebuilt under the migration's lock: on a big table this version takes as long as
-- reading the table once.
drop index {{schema}}.instances_machine;
create index instances_machine on {{schema}}.instances (machine, id)
  where status not in ('runnable', 'running');
