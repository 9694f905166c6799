-- gen-durable schema, version 30: a claim takes each free key's next instance from the key's
-- ordered index, reading one row, not all of the key's runnable rows.
--
-- For each key with a free slot, claim_rows (version 27) looks up the key's next instances:
-- runnable, due, by priority, due time and id, at most the key's free slots. instances_key_runnable
-- (concurrency_key, priority, run_at, id) serves that in order and stops at the first due row.
-- But the claim's plan is generic (version 21), made without knowing the key, and its estimate of
-- a key's due rows is small (the key's share of the table times a guess for run_at <= now()); so
-- it chose a bitmap scan of instances_key_due, which reads every runnable row of the key, and a
-- sort. Measured on 1,000 keys with 20 runnable rows each: 25 us per key claimed against 4, and a
-- claim of 200 keyed rows spent 6.7-10.4 ms choosing its rows against 1.9-3.1. A key with a deep
-- backlog (thousands of rows queued behind it) paid for all of them on every claim that freed it.
--
-- Every lookup of claim_rows walks an index in order (the claim index, the keys' claim index, a
-- key's next rows, primary keys); none needs a bitmap. enable_bitmapscan = off, scoped to the
-- function as its plan_cache_mode is, leaves the planner the ordered scans. Same signature, same
-- rows: nodes of versions 26 and up call it unchanged.
alter function {{schema}}.claim_rows(text, text[], integer, text, double precision, integer, integer, integer)
  set enable_bitmapscan = off;
