/**
 * Queries of the cron loop. Text only; values are bound parameters and the
 * validated schema is the only identifier in the text.
 */
import { quoteIdent } from "../names.js";

export function cronQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /**
     * Records entries (the registry `gen-durable cron` reads); $1: jsonb array of
     * { name, schedule, timezone, machine, queue, missed }.
     */
    record: `
      insert into ${s}.cron_entries (name, schedule, timezone, machine, queue, missed)
      select name, schedule, timezone, machine, queue, missed
      from jsonb_to_recordset($1::jsonb)
        as x(name text, schedule text, timezone text, machine text, queue text, missed text)
      on conflict (name) do update set schedule = excluded.schedule, timezone = excluded.timezone,
        machine = excluded.machine, queue = excluded.queue, missed = excluded.missed, recorded_at = now()`,

    /** The registry with each entry's latest tick and the instance it inserted (for `gen-durable cron`). */
    entries: `
      with names as (select name from ${s}.cron_entries union select distinct name from ${s}.cron_ticks)
      select n.name, e.schedule, e.timezone, e.machine, e.queue, e.missed, e.recorded_at as "recordedAt",
        t.tick_at as "lastTick", t.instance_id::text as "lastInstance", i.status as "lastStatus",
        (extract(epoch from now()) * 1000)::float8 as now
      from names n
      left join ${s}.cron_entries e on e.name = n.name
      left join lateral (select tick_at, instance_id from ${s}.cron_ticks c where c.name = n.name
                         order by tick_at desc limit 1) t on true
      left join ${s}.instances i on i.id = t.instance_id
      order by n.name`,

    /**
     * The database clock (epoch ms) and, for each name in $1, its latest
     * recorded tick (epoch ms; absent when never fired). Each lookup is one
     * backward step on the primary key.
     */
    clock: `
      select (extract(epoch from now()) * 1000)::float8 as now,
        coalesce((select jsonb_object_agg(n.name, (extract(epoch from l.tick_at) * 1000)::float8)
                  from unnest($1::text[]) as n(name)
                  cross join lateral (select max(t.tick_at) as tick_at from ${s}.cron_ticks t where t.name = n.name) l
                  where l.tick_at is not null), '{}'::jsonb) as last`,

    /**
     * Fires ticks, all or nothing, in one statement: each tick row goes in with
     * ON CONFLICT DO NOTHING, and an instance is inserted only for the tick rows
     * that went in. A tick another node already recorded inserts nothing (its
     * insert waits for that node's transaction if it is still open, so a rolled
     * back tick is fired here instead). Instance ids are drawn up front so the
     * tick row can name its instance. A tick later than the database clock is
     * never fired. Inserted instances NOTIFY their queue with the commit.
     * $1: jsonb array of { name, tick_at, machine, step, state, queue, priority }; $2: NOTIFY channel.
     * Returns one row per inserted instance.
     */
    fire: `
      with input as (
        select x.*, nextval(pg_get_serial_sequence('${s}.instances', 'id')) as id
        from jsonb_to_recordset($1::jsonb) as x(name text, tick_at timestamptz, machine text, step text, state jsonb,
          queue text, priority integer, concurrency_key text,
          concurrency_limit integer, version integer)
      ),
      -- Keys (from the definitions' concurrency option) before any row, in the one global order (see lock_keys).
      keys_locked as (select ${s}.lock_keys(array(select concurrency_key from input)) as n),
      ticks as (
        insert into ${s}.cron_ticks (name, tick_at, instance_id)
        select name, tick_at, id from input where tick_at <= now()
        on conflict (name, tick_at) do nothing
        returning instance_id
      ),
      ins as (
        insert into ${s}.instances
          (id, machine, step, state, queue, priority, concurrency_key, concurrency_limit, version)
        -- A JSON null state reads as SQL NULL here: stored as JSON null.
        select i.id, i.machine, i.step, coalesce(i.state, 'null'::jsonb), i.queue, i.priority, i.concurrency_key,
               i.concurrency_limit, coalesce(i.version, 1)
        from input i join ticks t on t.instance_id = i.id
        where (select n from keys_locked) >= 0
        returning id, queue
      ),
      woke as (select count(pg_notify($2::text, q.queue)) as n from (select distinct queue from ins) q)
      select ins.id::text as id, ins.queue, (select n from woke) as notified from ins`,

    /**
     * Deletes up to $1 tick rows older than a day, never the latest of a name
     * (the missed-tick check of the next start reads it). Rows another node is
     * deleting are skipped rather than waited for.
     */
    prune: `
      delete from ${s}.cron_ticks d
      using (
        select t.name, t.tick_at from ${s}.cron_ticks t
        where t.tick_at < now() - interval '1 day'
          and exists (select 1 from ${s}.cron_ticks n where n.name = t.name and n.tick_at > t.tick_at)
        limit $1
        for update skip locked
      ) old
      where d.name = old.name and d.tick_at = old.tick_at`,
  };
}

export type CronQueries = ReturnType<typeof cronQueries>;
