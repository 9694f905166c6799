/** The statements of evolving machines (runtime/versions.ts): upcasts, the start-up check, moves. */
import { quoteIdent } from "../names.js";
import type { Status } from "../status.js";
import { TERMINAL_SQL } from "../status.js";
import { machineOf } from "./instances.js";
import { stillRunning } from "./claims.js";
import { statement } from "./query.js";

/** A live instance parked at a step its machine lacks (runtime/versions.ts: StrandedInstance). */
export interface StrandedRow {
  id: string;
  machine: string;
  step: string;
  status: Status;
}

/** What `move` takes ($1 … $6, in that order). */
export interface MoveArgs {
  id: string;
  /** The step it moves to. */
  step: string;
  /** Its new state as JSON, or null to keep the one it has. */
  state: string | null;
  /** The version that state was written by, or null to keep the stored one. */
  version: number | null;
  /** NOTIFY channel: its queue is woken with the commit. */
  channel: string;
  /** The step it was at, for its history row. */
  fromStep: string;
}

export function versionQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /** Writes the upcast state of a claimed row (fenced by its claim) and its history row. */
    upcast: statement<{ id: string; token: string; state: string; version: number }, { instance_id: string }>(
      `
      with u as (
        update ${s}.instances set state = $3::jsonb, version = $4, updated_at = now()
        where id = $1 and claim_token = $2 and ${stillRunning()}
        returning id, step, attempt
      )
      insert into ${s}.transitions (instance_id, from_step, to_step, outcome, attempt)
      select id, step, step, 'migrated', attempt from u
      returning instance_id`,
      (a) => [a.id, a.token, a.state, a.version],
    ),
    /** Live instances of the given machines (`steps`: { machine: [steps] }) parked at a step their machine lacks. */
    stranded: statement<{ steps: Record<string, string[]>; limit: number }, StrandedRow>(
      `
      select i.id::text as id, i.machine, i.step, i.status
      from ${s}.instances i join jsonb_each($1::jsonb) m on m.key = i.machine
      where i.status not in ${TERMINAL_SQL} and not (m.value ? i.step)
      order by i.id limit $2`,
      (a) => [JSON.stringify(a.steps), a.limit],
    ),
    /**
     * Of the given machines (`steps`: { machine: [steps] }), those a start must check for stranded
     * instances: never checked, checked against other steps (compared as sets), or found stranded.
     */
    checksDue: statement<{ steps: Record<string, string[]> }, { machine: string }>(
      `
      select m.key as machine
      from jsonb_each($1::jsonb) m left join ${s}.stranded_checks c on c.machine = m.key
      where c.machine is null or c.stranded
         or not (c.steps @> array(select jsonb_array_elements_text(m.value))
                 and c.steps <@ array(select jsonb_array_elements_text(m.value)))
      order by 1`,
      (a) => [JSON.stringify(a.steps)],
    ),
    /** Records what a check of these machines ran against and whether it found them stranded. */
    recordChecks: statement<{ steps: Record<string, string[]>; stranded: readonly string[] }>(
      `
      insert into ${s}.stranded_checks (machine, steps, stranded)
      select m.key, array(select jsonb_array_elements_text(m.value)), m.key = any($2::text[])
      from jsonb_each($1::jsonb) m
      order by 1
      on conflict (machine) do update set steps = excluded.steps, stranded = excluded.stranded`,
      (a) => [JSON.stringify(a.steps), a.stranded],
    ),
    machineOf: machineOf(s),
    /** The instance, locked for a move. */
    lockForMove: statement<
      { id: string },
      { id: string; machine: string; step: string; status: Status; queue: string; version: number }
    >(
      `
      select id::text as id, machine, step, status, queue, version from ${s}.instances where id = $1 for update`,
      (a) => [a.id],
    ),
    /**
     * Moves an instance to `step` (`state` when not null), runnable now with fresh attempts; what the old
     * step was waiting for (an await, a lease) is dropped.
     */
    move: statement<MoveArgs>(
      `
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
      (a) => [a.id, a.step, a.state, a.version, a.channel, a.fromStep],
    ),
  };
}
export type VersionQueries = ReturnType<typeof versionQueries>;
