/** The statements of evolving machines (runtime/versions.ts): upcasts, the start-up check, moves. */
import { quoteIdent } from "../names.js";
import { TERMINAL_SQL } from "../status.js";

export function versionQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /** Writes the upcast state of a claimed row (fenced by its claim) and its history row. */
    upcast: `
      with u as (
        update ${s}.instances set state = $3::jsonb, version = $4, updated_at = now()
        where id = $1 and claim_token = $2 and status = 'running'
        returning id, step, attempt
      )
      insert into ${s}.transitions (instance_id, from_step, to_step, outcome, attempt)
      select id, step, step, 'migrated', attempt from u
      returning instance_id`,
    /** Live instances of the given machines ($1: { machine: [steps] }) parked at a step their machine lacks. */
    stranded: `
      select i.id::text as id, i.machine, i.step, i.status
      from ${s}.instances i join jsonb_each($1::jsonb) m on m.key = i.machine
      where i.status not in ${TERMINAL_SQL} and not (m.value ? i.step)
      order by i.id limit $2`,
    /** The instance $1, locked for a move. */
    lockForMove: `
      select id::text as id, machine, step, status, queue, version from ${s}.instances where id = $1 for update`,
    /**
     * Moves an instance to step $2 (state $3 when not null), runnable now with fresh attempts; what the old
     * step was waiting for (an await, a lease) is dropped. $5: NOTIFY channel.
     */
    move: `
      with u as (
        update ${s}.instances set
          step = $2, state = coalesce($3::jsonb, state), version = coalesce($4, version), status = 'runnable',
          run_at = now(), attempt = 0, await_spec = null, awaited = null, joined = false, error = null,
          rate_limited = null, leased_by = null, lease_expires_at = null, updated_at = now()
        where id = $1
        returning id, queue
      ),
      h as (
        insert into ${s}.transitions (instance_id, from_step, to_step, outcome, attempt)
        select id, $6, $2, 'moved', 0 from u
      )
      select pg_notify($5::text, queue) from u`,
  };
}
export type VersionQueries = ReturnType<typeof versionQueries>;
