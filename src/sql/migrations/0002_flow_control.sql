-- gen-durable schema, version 2: flow control (concurrency keys, rate limits,
-- queue pause and global limits) and the registry of started nodes.

-- Started nodes, for explain ("no started node runs machine M") and `status`.
-- Each node upserts its row when it starts and refreshes heartbeat_at with its
-- lease loop; a node whose heartbeat is older than a few leases is gone.
create table {{schema}}.nodes (
  id           text        primary key,
  machines     text[]      not null,
  queues       text[]      not null,
  started_at   timestamptz not null default now(),
  heartbeat_at timestamptz not null default now(),
  -- The lease duration of that node, in ms: a node is alive while
  -- heartbeat_at + lease_ms > now().
  lease_ms     integer     not null
);

-- Queue state shared by every node: pause/resume. A queue with no row runs.
create table {{schema}}.queues (
  name       text        primary key,
  paused     boolean     not null default false,
  updated_at timestamptz not null default now()
);

-- ---------------------------------------------------------------- concurrency keys
-- Steps of instances sharing a concurrency key never overlap. The database
-- enforces it: at most one running row per key.
create unique index instances_key_running on {{schema}}.instances (concurrency_key)
  where status = 'running' and concurrency_key is not null;

-- Keyed rows leave the claim index: a queue's claim walks unkeyed rows there and
-- keyed work through concurrency_keys, one row per key, so thousands of
-- instances queued behind one held key are never scanned by a claim.
drop index {{schema}}.instances_claim;
create index instances_claim on {{schema}}.instances (queue, priority, run_at, id)
  where status = 'runnable' and concurrency_key is null;
-- The next runnable instance of a key: by priority, due time, insertion...
create index instances_key_runnable on {{schema}}.instances (concurrency_key, priority, run_at, id)
  where status = 'runnable' and concurrency_key is not null;
-- ...and the earliest moment any instance of a key is due.
create index instances_key_due on {{schema}}.instances (concurrency_key, run_at, id)
  where status = 'runnable' and concurrency_key is not null;

-- One row per key with runnable or running instances, kept current by the
-- triggers below (every status, due-time or priority change of a keyed row goes
-- through them, whatever code path made it): `holder` is the running instance,
-- (queue, priority, run_at) describe when and where the key has work next.
create table {{schema}}.concurrency_keys (
  key      text        primary key,
  holder   bigint,
  queue    text,
  priority integer,
  run_at   timestamptz
);
create index concurrency_keys_claim on {{schema}}.concurrency_keys (queue, priority, run_at)
  where holder is null and run_at is not null;

-- Recomputes a key's row under its row lock. The lock serialises every change
-- to the key's instances, and each statement here reads a fresh snapshot after
-- taking it, so the row always reflects committed work.
create function {{schema}}.refresh_concurrency_key(k text) returns void
language plpgsql volatile as $$
declare
  due record;
  earliest record;
begin
  perform 1 from {{schema}}.concurrency_keys where key = k for update;
  if not found then
    insert into {{schema}}.concurrency_keys (key) values (k) on conflict (key) do nothing;
    perform 1 from {{schema}}.concurrency_keys where key = k for update;
  end if;
  select queue, priority into due from {{schema}}.instances
    where concurrency_key = k and status = 'runnable' and run_at <= now()
    order by priority, run_at, id limit 1;
  select queue, priority, run_at into earliest from {{schema}}.instances
    where concurrency_key = k and status = 'runnable'
    order by run_at, id limit 1;
  update {{schema}}.concurrency_keys set
    holder   = (select id from {{schema}}.instances where concurrency_key = k and status = 'running'),
    queue    = coalesce(due.queue, earliest.queue),
    priority = coalesce(due.priority, earliest.priority),
    run_at   = earliest.run_at
  where key = k;
end
$$;

create function {{schema}}.concurrency_key_changed() returns trigger
language plpgsql as $$
begin
  perform {{schema}}.refresh_concurrency_key(new.concurrency_key);
  return null;
end
$$;

create trigger instances_key_inserted after insert on {{schema}}.instances
  for each row when (new.concurrency_key is not null)
  execute function {{schema}}.concurrency_key_changed();
create trigger instances_key_updated after update of status, run_at, priority, queue on {{schema}}.instances
  for each row when (new.concurrency_key is not null and (
    old.status is distinct from new.status or old.run_at is distinct from new.run_at
    or old.priority is distinct from new.priority or old.queue is distinct from new.queue))
  execute function {{schema}}.concurrency_key_changed();

-- ---------------------------------------------------------------- rate limits
-- Token buckets shared by every node: one row per (limit, partition). Tokens
-- are refilled lazily from updated_at by the database clock, and every run
-- takes its tokens under the row lock just before it starts, so no window of
-- time ever sees more than burst + rate × its length.
-- A step that finds its bucket short joins the bucket's line: line_end is when
-- the tokens of everyone already waiting will have been refilled, and the step
-- is rescheduled one draw after it. Waiters thus wake one at a time, about when
-- their tokens exist, instead of all retrying whenever a token appears.
create table {{schema}}.rate_limit_buckets (
  name       text             not null,
  partition  text             not null default '',
  tokens     double precision not null,
  updated_at timestamptz      not null default now(),
  line_end   timestamptz,
  primary key (name, partition)
);
-- The rate limit a postponed step waits in line for (null: not waiting). When
-- it wakes it retries the draw without joining the line again.
alter table {{schema}}.instances add column rate_limited text;

-- Draws `weight` tokens from a bucket (created full on first use) if it holds
-- them. Otherwise: line = 'join' puts the caller at the end of the line,
-- 'retry' (a waiter whose turn came, but someone else took the tokens) waits
-- just until the bucket could cover it, 'none' only reports. wait_ms says how
-- long to wait before drawing again.
create function {{schema}}.take_tokens(
  bucket text, part text, capacity double precision, per_second double precision,
  weight double precision, line text,
  out taken boolean, out balance double precision, out wait_ms double precision)
language plpgsql volatile as $$
declare
  stored double precision;
  stored_at timestamptz;
  at timestamptz;
  available double precision;
  waiting_until timestamptz;
  slot timestamptz;
begin
  insert into {{schema}}.rate_limit_buckets as b (name, partition, tokens, updated_at)
  values (bucket, part, capacity, clock_timestamp()) on conflict (name, partition) do nothing;
  select b.tokens, b.updated_at, b.line_end into stored, stored_at, waiting_until
  from {{schema}}.rate_limit_buckets b where b.name = bucket and b.partition = part for update;
  -- The clock is read after the lock, never now(): a draw that waited for the lock
  -- must not refill from a moment before the previous draw (that would mint tokens).
  at := greatest(clock_timestamp(), stored_at);
  available := least(capacity, stored + extract(epoch from at - stored_at) * per_second);
  taken := available >= weight;
  balance := case when taken then available - weight else available end;
  wait_ms := case when taken then 0 else (weight - available) / per_second * 1000 end;
  if not taken and line = 'join' then
    slot := greatest(at + wait_ms * interval '1 millisecond',
                     coalesce(waiting_until, at) + weight / per_second * interval '1 second');
    wait_ms := extract(epoch from slot - at) * 1000;
    waiting_until := slot;
  end if;
  update {{schema}}.rate_limit_buckets b set tokens = balance, updated_at = at, line_end = waiting_until
  where b.name = bucket and b.partition = part;
end
$$;

-- `gen-durable status` counts per queue: joining and failed rows are few, and
-- counting them must not walk every finished instance.
create index instances_joining on {{schema}}.instances (queue) where status = 'joining';
create index instances_failed on {{schema}}.instances (queue) where status = 'failed';
