-- gen-durable schema, version 6: one lock order for concurrency keys.
--
-- Every change to a keyed instance updates its key's row in concurrency_keys (the triggers of
-- version 2), so a transaction that changes instances of several keys locks several key rows.
-- Taken in whatever order its rows happen to be processed, two such transactions (a group commit
-- and an insertMany, the await-timeout sweep and a cancel) can each hold the key the other
-- waits for: a deadlock, and Postgres aborts one of them — perhaps the caller's insert.
--
-- So every engine transaction that changes keyed instances first calls lock_keys with all the
-- keys it will touch, before it locks any instance row: one transaction-scoped advisory lock per
-- key, taken in one global order (by the key's hash). Whoever then waits for a key row or an
-- instance row holds every key lock it needs, so no cycle can form through the keys. Claims
-- take no key locks: they skip whatever is locked and never wait.
create function {{schema}}.lock_keys(keys text[]) returns integer
language sql volatile as $$
  select count(pg_advisory_xact_lock(h))::integer from (
    select distinct hashtextextended('gen_durable:{{schema}}:key:' || k, 0) as h
    from unnest(keys) as k where k is not null
    order by 1
  ) ordered
$$;
