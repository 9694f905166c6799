/** Published values (ctx.publish, engine.waitForEvent): a jsonb object per instance, merged at commit. */
import { quoteIdent } from "../names.js";
import { TERMINAL_SQL } from "../status.js";

export function publishedQueries(schema: string) {
  const s = quoteIdent(schema);
  const columns = `id::text as id, status, published ? $2 as has, published -> $2 as value`;
  return {
    /**
     * Merges $2 into the instance's published values, in the transaction that commits the step's
     * outcome (whose UPDATE holds the row lock), unless the merged object would exceed $5 bytes:
     * then no row comes back. Records the values in history, from step $3, and sends NOTIFY on $4
     * with the commit, so waitForEvent on any node wakes.
     */
    store: `
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
    /** The instance and whether it has published $2 (by id). */
    byId: `select ${columns} from ${s}.instances where id = $1`,
    /** The same, by correlation key: the live instance, else the newest (as engine.get). */
    byKey: `select ${columns} from ${s}.instances where correlation_key = $1
            order by (status not in ${TERMINAL_SQL}) desc, id desc limit 1`,
  };
}

export type PublishedQueries = ReturnType<typeof publishedQueries>;
