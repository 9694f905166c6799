-- gen-durable schema, version 5: rows claimed ahead are not charged an attempt.
--
-- A node claims up to its concurrency in rows beyond the ones it runs (claim-ahead), so the next
-- step starts the moment a slot frees. Such a row is `running` (leased, renewed) but its code has
-- not started. `claimed_ahead` marks it: the claim does not count its attempt; the node counts it
-- when the step starts (one batched, fenced update). If the node dies first, the reaper and a
-- graceful release give the row back uncharged, with its place in line and without a history
-- row, since nothing ran. Not indexed, so setting and clearing it keeps updates on their page.
alter table {{schema}}.instances add column claimed_ahead boolean not null default false;
