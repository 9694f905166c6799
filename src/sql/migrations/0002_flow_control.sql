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
-- through them, whatever code path made it): `holder` is the running instance;
-- run_at is the earliest due time of the key's runnable instances (null: none),
-- queue that instance's queue, and priority the key's best (lowest) priority:
-- they order keys in a claim, which then picks the key's next instance exactly.
create table {{schema}}.concurrency_keys (
  key      text        primary key,
  holder   bigint,
  queue    text,
  priority integer,
  run_at   timestamptz
);
create index concurrency_keys_claim on {{schema}}.concurrency_keys (queue, priority, run_at)
  where holder is null and run_at is not null;

-- One statement or two per change, never a scan of the key's instances:
--   * a row enters the runnable set (insert, next step, retry, signal, join):
--     the key's work is at least that early: an upsert taking the least values;
--   * a row leaves it or moves in it (claim, cancel, advanced time): the key
--     row is locked first and recomputed after, from two index probes, so the
--     fresh snapshot of the second statement sees every change committed
--     before the lock (a concurrent insert either committed before, or
--     upserts after us on our result);
--   * otherwise only the holder changes (a running step's outcome).
create function {{schema}}.concurrency_key_changed() returns trigger
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
  elsif was_running then
    update {{schema}}.concurrency_keys set holder = null where key = k;
  end if;
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
  -- When the bucket is full again if nobody draws: from then on it is the same as
  -- no row at all (a bucket is created full), so the reaper may delete it.
  full_at    timestamptz      not null default now(),
  primary key (name, partition)
);
create index rate_limit_buckets_idle on {{schema}}.rate_limit_buckets (full_at);
-- The rate limit a postponed step waits in line for (null: not waiting). When
-- it wakes it retries the draw without joining the line again.
alter table {{schema}}.instances add column rate_limited text;

-- Draws from a bucket (created full on first use), under its row lock, for a
-- batch of callers in order: weights[i] tokens if the bucket holds them.
-- Otherwise: lines[i] = 'join' puts that caller at the end of the bucket's line,
-- 'retry' (a waiter whose turn came, but someone else took the tokens) waits
-- just until the bucket could cover it, 'none' only reports. wait_ms says how
-- long to wait before drawing again. One row per caller, in order.
create function {{schema}}.take_tokens(
  bucket text, part text, capacity double precision, per_second double precision,
  weights double precision[], lines text[])
returns table (taken boolean, balance double precision, wait_ms double precision)
language plpgsql volatile as $$
declare
  stored double precision;
  stored_at timestamptz;
  at timestamptz;
  available double precision;
  waiting_until timestamptz;
  slot timestamptz;
  w double precision;
begin
  -- Twice at most: the reaper may delete an idle (full) bucket between our insert and our lock.
  for attempt in 1 .. 2 loop
    insert into {{schema}}.rate_limit_buckets as b (name, partition, tokens, updated_at)
    values (bucket, part, capacity, clock_timestamp()) on conflict (name, partition) do nothing;
    select b.tokens, b.updated_at, b.line_end into stored, stored_at, waiting_until
    from {{schema}}.rate_limit_buckets b where b.name = bucket and b.partition = part for update;
    exit when found;
  end loop;
  -- The clock is read after the lock, never now(): a draw that waited for the lock
  -- must not refill from a moment before the previous draw (that would mint tokens).
  at := greatest(clock_timestamp(), stored_at);
  available := least(capacity, stored + extract(epoch from at - stored_at) * per_second);
  for i in 1 .. coalesce(array_length(weights, 1), 0) loop
    w := weights[i];
    taken := available >= w;
    if taken then
      available := available - w;
      wait_ms := 0;
    else
      wait_ms := (w - available) / per_second * 1000;
      if lines[i] = 'join' then
        slot := greatest(at + wait_ms * interval '1 millisecond',
                         coalesce(waiting_until, at) + w / per_second * interval '1 second');
        wait_ms := extract(epoch from slot - at) * 1000;
        waiting_until := slot;
      end if;
    end if;
    balance := available;
    return next;
  end loop;
  update {{schema}}.rate_limit_buckets b
  set tokens = available, updated_at = at, line_end = waiting_until,
      full_at = at + (capacity - available) / per_second * interval '1 second'
  where b.name = bucket and b.partition = part;
end
$$;

-- `gen-durable status` counts per queue: joining and failed rows are few, and
-- counting them must not walk every finished instance.
create index instances_joining on {{schema}}.instances (queue) where status = 'joining';
create index instances_failed on {{schema}}.instances (queue) where status = 'failed';
