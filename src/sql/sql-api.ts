/**
 * Statements behind the SQL API (the functions `insert` and `signal` of the migration "sql api"):
 * what engines record for SQL callers when they start, and the check of a row inserted from SQL
 * when it is claimed. Text only; values are bound parameters, the schema the only identifier.
 */
import { quoteIdent } from "../names.js";

export function sqlApiQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /** Serialises the records of engines starting together on one schema ($1: a key naming the schema). */
    lock: `select pg_advisory_xact_lock(hashtextextended($1, 0))`,

    /** The machines an engine defines ($1 names, $2 kinds, $3 initial steps, $4 queues), sorted by name. */
    recordMachines: `
      insert into ${s}.machines (name, kind, initial_step, queue)
      select * from unnest($1::text[], $2::text[], $3::text[], $4::text[]) as x(name, kind, initial_step, queue)
      order by 1
      on conflict (name) do update set kind = excluded.kind, initial_step = excluded.initial_step,
        queue = excluded.queue, updated_at = now()
      where (machines.kind, machines.initial_step, machines.queue)
        is distinct from (excluded.kind, excluded.initial_step, excluded.queue)`,

    /** The engine options SQL callers follow ($1 names, $2 values as jsonb text), sorted by name. */
    recordSettings: `
      insert into ${s}.settings (name, value)
      select * from unnest($1::text[], $2::jsonb[]) as x(name, value) order by 1
      on conflict (name) do update set value = excluded.value, updated_at = now()
      where settings.value is distinct from excluded.value`,

    /**
     * A row inserted from SQL, claimed ($1 id, $2 claim token) and found valid: stores the schema's
     * output as its state and clears the flag, fenced on the claim like every write after one. The
     * state is the current definition's ($4: its version), whatever version the row was stamped with.
     */
    acceptState: `
      update ${s}.instances set state = $3::jsonb, unvalidated = false, version = $4
      where id = $1 and claim_token = $2 and status = 'running'`,
  };
}

export type SqlApiQueries = ReturnType<typeof sqlApiQueries>;
