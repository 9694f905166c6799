-- gen-durable schema, version 14: the version of its machine's definition each instance was written by.
--
-- A machine declares `version` (default 1) and upcasters (`migrate`); when a node claims an instance
-- written by an older version, it upcasts the state and records the new version with a history row
-- before the step runs. Rows from before this migration were written by version 1.
alter table {{schema}}.instances add column version integer not null default 1;
