-- gen-durable schema, version 4: cron ticks.

-- One row per fired tick of a cron entry. The primary key is what makes a tick
-- fire exactly once however many nodes run the entry: every node inserts
-- (name, tick_at) with ON CONFLICT DO NOTHING, in the same statement that
-- inserts the instance, and only the node whose tick row went in inserts one.
-- The latest row of each name is also where a restarted cluster learns which
-- ticks it missed. Rows older than a day are pruned by the cron loop, except
-- the latest of each name.
create table {{schema}}.cron_ticks (
  name        text        not null,
  tick_at     timestamptz not null,
  -- The instance this tick inserted (no foreign key: GC prunes instances on its own schedule).
  instance_id bigint      not null,
  inserted_at timestamptz not null default now(),
  primary key (name, tick_at)
);
