-- gen-durable schema, version 11: published values, and joins that resume before every child is done.
--
-- ctx.publish(key, value) merges into `published` (one jsonb object per instance) in the
-- transaction that commits the step's outcome, and the history row `published` records what that
-- step published. A jsonb column rather than a table: it is pruned with its instance, read with
-- it by engine.get, and written under the row lock the outcome already holds.
alter table {{schema}}.instances add column published jsonb;
alter table {{schema}}.transitions add column published jsonb;

-- A spawn's join condition ({ need, total, failFast, keep }; null: every child, as before), and
-- the children of the latest spawn the join sweep has counted as done and as not done.
alter table {{schema}}.instances
  add column join_rule jsonb,
  add column children_done integer not null default 0,
  add column children_failed integer not null default 0;
