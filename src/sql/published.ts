/** Published values (ctx.publish, engine.waitForEvent): a jsonb object per instance, merged at commit. */
import { quoteIdent } from "../names.js";
import type { Status } from "../status.js";
import { TERMINAL_SQL } from "../status.js";
import { statement } from "./query.js";

/** An instance as waitForEvent reads it: whether it published `key`, and the value if so. */
export interface PublishedRow {
  id: string;
  status: Status;
  has: boolean | null;
  value: unknown;
}

export function publishedQueries(schema: string) {
  const s = quoteIdent(schema);
  const columns = `id::text as id, status, published ? $2 as has, published -> $2 as value`;
  return {
    /**
     * Merges `values` into the instance's published values, in the transaction that commits the
     * step's outcome (whose UPDATE holds the row lock), unless the merged object would exceed
     * `maxBytes`: then no row comes back. Records the values in history, from step `fromStep`, and
     * sends NOTIFY on `channel` with `notice` as payload when the transaction commits, so
     * waitForEvent on any node wakes.
     */
    store: statement<
      { id: string; values: string; fromStep: string; channel: string; maxBytes: number; notice: string },
      { pg_notify: string }
    >(
      `
      with merged as (
        update ${s}.instances set published = coalesce(published, '{}'::jsonb) || $2::jsonb
        where id = $1 and octet_length((coalesce(published, '{}'::jsonb) || $2::jsonb)::text) <= $5
        returning id
      ),
      history as (
        insert into ${s}.transitions (instance_id, from_step, to_step, outcome, published)
        select id, $3::text, null, 'published', $2::jsonb from merged
      )
      select pg_notify($4::text, $6::text) from merged`,
      (a) => [a.id, a.values, a.fromStep, a.channel, a.maxBytes, a.notice],
    ),
    /** The instance and whether it has published `key` (by id). */
    byId: statement<{ id: string; key: string }, PublishedRow>(
      `select ${columns} from ${s}.instances where id = $1`,
      (a) => [a.id, a.key],
    ),
    /** The same, by correlation key: the live instance, else the newest (as engine.get). */
    byKey: statement<{ correlationKey: string; key: string }, PublishedRow>(
      `select ${columns} from ${s}.instances where correlation_key = $1
            order by (status not in ${TERMINAL_SQL}) desc, id desc limit 1`,
      (a) => [a.correlationKey, a.key],
    ),
  };
}

export type PublishedQueries = ReturnType<typeof publishedQueries>;
