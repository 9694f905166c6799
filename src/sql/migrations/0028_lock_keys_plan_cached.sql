-- gen-durable schema, version 28: lock_keys keeps its plan for the session.
--
-- lock_keys (version 6) was a SQL-language function. Postgres 15 neither inlines a volatile SQL
-- function nor keeps its plan between the statements that call it: every call parsed and planned
-- its query again. It is called once by nearly every statement that writes instances (the group
-- commit, an insert, a signal's delivery, a release, the reaper and the timeout sweep), so each of
-- them paid for that: about 75 us a call over a round trip of `select 1`, against about 3 us now
-- (an empty list, the common case of instances without a concurrency key).
--
-- Now plpgsql, whose statements are planned once per session. The same query, the same locks in
-- the same order and the same result: nodes of every version call it unchanged, and a node of an
-- earlier version running beside this one takes the same advisory locks for the same keys.
create or replace function {{schema}}.lock_keys(keys text[]) returns integer
language plpgsql volatile as $$
declare
  taken integer;
begin
  select count(pg_advisory_xact_lock(h))::integer into taken from (
    select distinct hashtextextended('gen_durable:{{schema}}:key:' || k, 0) as h
    from unnest(keys) as k where k is not null
    order by 1
  ) ordered;
  return taken;
end
$$;
