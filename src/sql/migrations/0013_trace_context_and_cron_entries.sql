-- gen-durable schema, version 13: trace propagation, and the registry of cron entries.
--
-- Trace propagation: the W3C trace context (traceparent, and tracestate when set) that was active
-- where an instance was inserted (an HTTP request, a parent's step for a spawned child) or a
-- signal was sent, as a JSON object {"traceparent": ..., "tracestate": ...}. A step's span links
-- to its instance's context and to the contexts of the signals that resumed it. Null when no
-- span was active: nothing is stored then.
alter table {{schema}}.instances add column trace_context jsonb;
alter table {{schema}}.signals add column trace_context jsonb;

-- The cron entries of the engines, recorded by each node that runs them when its cron loop
-- starts, so that `gen-durable cron` (which has no engine options) can show each entry's
-- schedule and compute its next tick. The latest node to start with an entry wins.
create table {{schema}}.cron_entries (
  name        text        primary key,
  schedule    text        not null,
  timezone    text        not null,
  machine     text        not null,
  queue       text        not null,
  missed      text        not null,
  recorded_at timestamptz not null default now()
);
