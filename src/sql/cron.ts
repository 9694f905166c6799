/**
 * Queries of the cron loop. Text only; values are bound parameters and the
 * validated schema is the only identifier in the text.
 */
import { quoteIdent } from "../names.js";
import type { Status } from "../status.js";
import { probe, statement } from "./query.js";

/** A cron entry as `record` stores it (what `gen-durable cron` shows). */
export interface CronEntryRecord {
  name: string;
  schedule: string;
  timezone: string;
  machine: string;
  queue: string;
  missed: string;
}

/** An entry of the registry (or a name that only left ticks), with its latest tick. */
export interface CronEntryRow {
  name: string;
  schedule: string | null;
  timezone: string | null;
  machine: string | null;
  queue: string | null;
  missed: string | null;
  recordedAt: Date | null;
  lastTick: Date | null;
  lastInstance: string | null;
  lastStatus: Status | null;
  /** The database clock, epoch ms. */
  now: number;
}

/** A tick to fire: the instance it inserts, if no node recorded the tick before. */
export interface CronTick {
  name: string;
  /** ISO timestamp. */
  tick_at: string;
  machine: string;
  step: string;
  state: unknown;
  queue: string;
  priority: number;
  concurrency_key: string | null;
  concurrency_limit: number | null;
  version: number;
}

export function cronQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /**
     * Records entries (the registry `gen-durable cron` reads), sent as one jsonb array.
     */
    record: statement<{ entries: readonly CronEntryRecord[] }>(
      `
      insert into ${s}.cron_entries (name, schedule, timezone, machine, queue, missed)
      select name, schedule, timezone, machine, queue, missed
      from jsonb_to_recordset($1::jsonb)
        as x(name text, schedule text, timezone text, machine text, queue text, missed text)
      on conflict (name) do update set schedule = excluded.schedule, timezone = excluded.timezone,
        machine = excluded.machine, queue = excluded.queue, missed = excluded.missed, recorded_at = now()`,
      (a) => [JSON.stringify(a.entries)],
    ),

    /** The registry with each entry's latest tick and the instance it inserted (for `gen-durable cron`). */
    entries: probe<CronEntryRow>(`
      with names as (select name from ${s}.cron_entries union select distinct name from ${s}.cron_ticks)
      select n.name, e.schedule, e.timezone, e.machine, e.queue, e.missed, e.recorded_at as "recordedAt",
        t.tick_at as "lastTick", t.instance_id::text as "lastInstance", i.status as "lastStatus",
        (extract(epoch from now()) * 1000)::float8 as now
      from names n
      left join ${s}.cron_entries e on e.name = n.name
      left join lateral (select tick_at, instance_id from ${s}.cron_ticks c where c.name = n.name
                         order by tick_at desc limit 1) t on true
      left join ${s}.instances i on i.id = t.instance_id
      order by n.name`),

    /**
     * The database clock (epoch ms) and, for each of `names`, its latest
     * recorded tick (epoch ms; absent when never fired). Each lookup is one
     * backward step on the primary key.
     */
    clock: statement<{ names: readonly string[] }, { now: number; last: Record<string, number> }>(
      `
      select (extract(epoch from now()) * 1000)::float8 as now,
        coalesce((select jsonb_object_agg(n.name, (extract(epoch from l.tick_at) * 1000)::float8)
                  from unnest($1::text[]) as n(name)
                  cross join lateral (select max(t.tick_at) as tick_at from ${s}.cron_ticks t where t.name = n.name) l
                  where l.tick_at is not null), '{}'::jsonb) as last`,
      (a) => [a.names],
    ),

    /**
     * Fires ticks, all or nothing, in one statement: each tick row goes in with
     * ON CONFLICT DO NOTHING, and an instance is inserted only for the tick rows
     * that went in. A tick another node already recorded inserts nothing (its
     * insert waits for that node's transaction if it is still open, so a rolled
     * back tick is fired here instead). Instance ids are drawn up front so the
     * tick row can name its instance. A tick later than the database clock is
     * never fired. Inserted instances NOTIFY their queue with the commit.
     * The ticks go as one jsonb array; `channel`: the NOTIFY channel.
     * Returns one row per inserted instance.
     */
    fire: statement<{ ticks: readonly CronTick[]; channel: string }, { id: string; queue: string; notified: string }>(
      `
      with input as (
        select x.*, nextval((select pg_get_serial_sequence('${s}.instances', 'id')::regclass)) as id
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
      (a) => [JSON.stringify(a.ticks), a.channel],
    ),

    /**
     * Deletes up to `limit` tick rows older than a day, never the latest of a name
     * (the missed-tick check of the next start reads it). Rows another node is
     * deleting are skipped rather than waited for.
     */
    prune: statement<{ limit: number }>(
      `
      delete from ${s}.cron_ticks d
      using (
        select t.name, t.tick_at from ${s}.cron_ticks t
        where t.tick_at < now() - interval '1 day'
          and exists (select 1 from ${s}.cron_ticks n where n.name = t.name and n.tick_at > t.tick_at)
        limit $1
        for update skip locked
      ) old
      where d.name = old.name and d.tick_at = old.tick_at`,
      (a) => [a.limit],
    ),
  };
}

export type CronQueries = ReturnType<typeof cronQueries>;
