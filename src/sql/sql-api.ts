/**
 * Statements behind the SQL API (the functions `insert` and `signal` of the migration "sql api"):
 * what engines record for SQL callers when they start, and the check of a row inserted from SQL
 * when it is claimed. Text only; values are bound parameters, the schema the only identifier.
 */
import { quoteIdent } from "../names.js";
import { stillRunning } from "./claims.js";
import { statement } from "./query.js";

/** A machine as the SQL API needs it: what `insert` from SQL starts it with. */
export interface MachineRecord {
  name: string;
  kind: string;
  /** Its initial step. */
  initial: string;
  /** Its default queue. */
  queue: string;
  /** Its `concurrency` option: the limit a row inserted from SQL with a key takes. */
  concurrency?: { readonly limit?: number } | undefined;
}

export function sqlApiQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /** Serialises the records of engines starting together on one schema (`key` names the schema). */
    lock: statement<{ key: string }>(`select pg_advisory_xact_lock(hashtextextended($1, 0))`, (a) => [a.key]),

    /** The machines an engine defines (sorted by name: engines starting together lock rows in one order). */
    recordMachines: statement<{ machines: readonly MachineRecord[] }>(
      `
      insert into ${s}.machines (name, kind, initial_step, queue, concurrency_limit)
      select * from unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::integer[])
        as x(name, kind, initial_step, queue, concurrency_limit)
      order by 1
      on conflict (name) do update set kind = excluded.kind, initial_step = excluded.initial_step,
        queue = excluded.queue, concurrency_limit = excluded.concurrency_limit, updated_at = now()
      where (machines.kind, machines.initial_step, machines.queue, machines.concurrency_limit)
        is distinct from (excluded.kind, excluded.initial_step, excluded.queue, excluded.concurrency_limit)`,
      (a) => [
        a.machines.map((m) => m.name),
        a.machines.map((m) => m.kind),
        a.machines.map((m) => m.initial),
        a.machines.map((m) => m.queue),
        // Null for 1, as an instance stores it (the column's check starts at 2).
        a.machines.map((m) => ((m.concurrency?.limit ?? 1) > 1 ? m.concurrency!.limit! : null)),
      ],
    ),

    /** The engine options SQL callers follow (name: value as jsonb text), stored sorted by name. */
    recordSettings: statement<{ settings: Readonly<Record<string, string>> }>(
      `
      insert into ${s}.settings (name, value)
      select * from unnest($1::text[], $2::jsonb[]) as x(name, value) order by 1
      on conflict (name) do update set value = excluded.value, updated_at = now()
      where settings.value is distinct from excluded.value`,
      (a) => [Object.keys(a.settings), Object.values(a.settings)],
    ),

    /**
     * A row inserted from SQL, claimed (`id`, `token`) and found valid: stores the schema's output
     * as its state (JSON) and clears the flag, fenced on the claim like every write after one. The
     * state is the current definition's (`version`), whatever version the row was stamped with.
     */
    acceptState: statement<{ id: string; token: string; state: string; version: number }>(
      `
      update ${s}.instances set state = $3::jsonb, unvalidated = false, version = $4
      where id = $1 and claim_token = $2 and ${stillRunning()}`,
      (a) => [a.id, a.token, a.state, a.version],
    ),
  };
}

export type SqlApiQueries = ReturnType<typeof sqlApiQueries>;
