-- gen-durable schema, version 9: storage and autovacuum settings for the busiest tables.
--
-- Every step rewrites its instance row twice or more (claim, outcome, lease renewals), every
-- keyed change rewrites its key's row and every token draw its bucket's row: these tables are
-- mostly dead rows waiting for vacuum. With the server's defaults, autovacuum visits a table
-- once 20% of it is dead (50 rows + 0.2 x live) and then works at a crawl (cost limit 200), so
-- under load dead rows pile up faster than it removes them and every claim walks them.
--
-- fillfactor leaves room on each page, so an updated row can stay on its page (a HOT update
-- when no indexed column changed: lease renewals, bucket draws, key holders), which keeps
-- indexes small and lets any reader prune the page without vacuum. The scale factors make
-- autovacuum come at a fixed, small number of dead rows whatever the table's size, and the
-- cost limit lets it finish a pass in seconds rather than minutes. They matter as the tables
-- grow: at 5 million kept instances the default waits for 1 million dead rows, these for ~100,000.
-- In the soak (bench/soak: ~50,000 live instances) they made no difference beyond the noise of
-- autovacuum_naptime, which with the server on bounds the dead rows far more (docs/operations.md,
-- "Vacuum", has the figures).
--
-- None of this turns autovacuum on where the server has it off (autovacuum = off in
-- postgresql.conf wins over any table setting); the engine warns about that.
alter table {{schema}}.instances set (
  fillfactor = 80,
  autovacuum_vacuum_scale_factor = 0.02,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0.05,
  autovacuum_analyze_scale_factor = 0.02,
  autovacuum_vacuum_cost_limit = 2000,
  autovacuum_vacuum_cost_delay = 1
);
-- Insert-only until the GC deletes: vacuum after a share of new rows (visibility map, freezing)
-- and after each GC pass.
alter table {{schema}}.transitions set (
  autovacuum_vacuum_scale_factor = 0.05,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0.05,
  autovacuum_vacuum_cost_limit = 2000,
  autovacuum_vacuum_cost_delay = 1
);
alter table {{schema}}.signals set (
  fillfactor = 90,
  autovacuum_vacuum_scale_factor = 0.05,
  autovacuum_vacuum_threshold = 1000,
  autovacuum_vacuum_insert_scale_factor = 0.05,
  autovacuum_vacuum_cost_limit = 2000,
  autovacuum_vacuum_cost_delay = 1
);
-- Few rows, each rewritten many times a second: half of each page free for HOT updates, and a
-- vacuum as soon as a few hundred versions are dead.
alter table {{schema}}.concurrency_keys set (
  fillfactor = 50,
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 500,
  autovacuum_vacuum_cost_limit = 2000,
  autovacuum_vacuum_cost_delay = 1
);
alter table {{schema}}.rate_limit_buckets set (
  fillfactor = 50,
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 500,
  autovacuum_vacuum_cost_limit = 2000,
  autovacuum_vacuum_cost_delay = 1
);
alter table {{schema}}.nodes set (
  fillfactor = 50,
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 200
);
