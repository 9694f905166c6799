-- gen-durable schema, version 3: garbage collection of terminal instances.

-- Finding prunable rows: terminal instances of one machine, oldest first. The
-- GC walks this index per machine as a range scan (machine = M and
-- updated_at < cutoff), so a tick costs O(rows it deletes), whatever the size
-- of the table; it also lists the machines that have terminal rows (a loose
-- index scan). Live rows are not in it at all.
create index instances_gc on {{schema}}.instances (machine, updated_at, id)
  where status in ('done', 'failed', 'cancelled');

-- Deleting the signals of pruned instances: the mailbox index covers only
-- unconsumed signals, and consumed ones are kept until their instance goes.
create index signals_instance on {{schema}}.signals (instance_id) where instance_id is not null;

-- Per-machine retention overrides (defineMachine({ retention })), recorded by
-- each engine that defines the machine when it starts, so every pruner (a node
-- that does not run the machine, a pure client, the CLI) honours them. A
-- machine without a row uses the pruner's default retention.
create table {{schema}}.gc_retention (
  machine      text        primary key,
  retention_ms bigint      not null check (retention_ms >= 0),
  updated_at   timestamptz not null default now()
);
