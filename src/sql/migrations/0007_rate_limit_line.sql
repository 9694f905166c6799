-- gen-durable schema, version 7: a rate limit's line holds its waiters' tokens.
--
-- Until now a step that found its bucket short was given a turn (line_end advanced by its
-- weight), but its tokens were not set aside: a new draw that came while the bucket held a
-- token took it, and the waiter whose turn it was found the bucket short again, retried when
-- the bucket could cover it (~1 / rate later), and so did every other waiter whose turn had
-- come. Measured with 50 keys, 100/s and burst 20 and more work due than the limit: 15 to 19
-- postponements per run, and a draw for each.
--
-- Now the bucket keeps two balances, both refilled at the limit's rate and capped at its burst:
--   tokens            what runs may still take (a run takes its tokens just before it starts,
--                     as before: no window of time sees more than burst + rate × its length);
--   line_end          encodes what is *not promised* to anyone in line:
--                     free = least(tokens, (now - line_end) × rate), negative while some wait.
-- A new draw ('join') takes its tokens only from the free ones; when they are short it is
-- promised the next ones instead (free goes down by its weight) and told when they will exist:
-- the end of the line. Nobody can take them before its turn, so at its turn ('retry') it takes
-- them from `tokens` at once: one postponement per run, however long the line.
-- A waiter can still miss out when its tokens were never stored: it came so late that the
-- bucket had overflowed its burst meanwhile (a node stalled or killed, its rows waiting for a
-- poll). It is then promised the tokens at the end of the line, like a new draw.
-- engine.consume() ('none') takes only free tokens and never joins the line.
create or replace function {{schema}}.take_tokens(
  bucket text, part text, capacity double precision, per_second double precision,
  weights double precision[], lines text[])
returns table (taken boolean, balance double precision, wait_ms double precision)
language plpgsql volatile as $$
declare
  stored double precision;
  stored_at timestamptz;
  line timestamptz;
  at timestamptz;
  available double precision;
  free double precision;
  w double precision;
begin
  -- Twice at most: the reaper may delete an idle (full) bucket between our insert and our lock.
  for attempt in 1 .. 2 loop
    insert into {{schema}}.rate_limit_buckets as b (name, partition, tokens, updated_at)
    values (bucket, part, capacity, clock_timestamp()) on conflict (name, partition) do nothing;
    select b.tokens, b.updated_at, b.line_end into stored, stored_at, line
    from {{schema}}.rate_limit_buckets b where b.name = bucket and b.partition = part for update;
    exit when found;
  end loop;
  -- The clock is read after the lock, never now(): a draw that waited for the lock
  -- must not refill from a moment before the previous draw (that would mint tokens).
  at := greatest(clock_timestamp(), stored_at);
  available := least(capacity, stored + extract(epoch from at - stored_at) * per_second);
  -- Never more free than stored: tokens lost to the cap while promised are lost to the line too.
  free := least(available, coalesce(extract(epoch from at - line) * per_second, capacity));
  for i in 1 .. coalesce(array_length(weights, 1), 0) loop
    w := weights[i];
    if lines[i] = 'retry' then
      -- A waiter at its turn: its tokens are in the bucket, set aside for it.
      taken := available >= w;
    else
      taken := free >= w;
    end if;
    if taken then
      available := available - w;
      free := least(free - (case when lines[i] = 'retry' then 0 else w end), available);
      wait_ms := 0;
    elsif lines[i] = 'none' then
      wait_ms := (w - free) / per_second * 1000;
    else
      -- Promised the next w tokens nobody else is promised: at the end of the line.
      free := free - w;
      wait_ms := greatest(-free, 0) / per_second * 1000;
    end if;
    balance := greatest(free, 0);
    return next;
  end loop;
  update {{schema}}.rate_limit_buckets b
  set tokens = available, updated_at = at,
      line_end = at - free / per_second * interval '1 second',
      -- Full and with nobody in line from then on, if nobody draws: the reaper may forget it.
      full_at = at + (capacity - free) / per_second * interval '1 second'
  where b.name = bucket and b.partition = part;
end
$$;
