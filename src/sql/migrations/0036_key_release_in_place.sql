-- gen-durable schema, version 36: a concurrency key given back is rewritten in place.
--
-- concurrency_keys_claim held only the keys with a free slot: its predicate read `holders`. So the
-- update that takes a finished step out of its key's holders (complete_outcomes, once a keyed job)
-- turned the key from full to free, could not be a HOT update, and wrote a new entry into both of
-- the table's indexes.
-- Now the index holds every key with work (run_at not null), held or not, and that update changes
-- no indexed column: it stays on its page (fillfactor 50, version 9) and enters no index.
--
-- The price is in the claim's walk of the index (free_keys, and claim_rows' probe for a key with
-- a free slot): it now steps over the keys whose slots are all taken, reading each one's row to
-- see so, where they were not in the index at all. They are the keys whose steps run, or wait in
-- some node's buffer, right now: at most the queue's running steps across all nodes, and only
-- those whose next work is due before the free keys' are walked.
--
-- Measured on Postgres 15 with fsync on, 20,000 no-op jobs over 2,000 keys of limit 1 at
-- concurrency 32, four alternating pairs (`BENCH_INVESTIGATE=gd-variant`, this index against the
-- old one): 1.04-1.19 times the jobs per second (median 1.13), complete_outcomes 24.7-34.9 us a
-- job on the server against 32.0-43.8, WAL 1,225 bytes a job against 1,305. Counted by
-- bench/instructions.sh (2,000 keys, batches of 32): 523,496 instructions a job against 580,800.
drop index {{schema}}.concurrency_keys_claim;
create index concurrency_keys_claim on {{schema}}.concurrency_keys (queue, priority, run_at)
  where run_at is not null;
