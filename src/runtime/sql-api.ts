/**
 * The engine's side of the SQL API: recording what the SQL functions need (the machines'
 * initial steps and queues, and the engine options they follow) when an engine starts, and
 * validating the state of a row inserted from SQL when a node claims it. Rows inserted by
 * engine.insert never reach the check: their flag is false.
 */
import type pg from "pg";
import type { AnyMachine } from "../define.js";
import { withTransaction } from "../db/pool.js";
import { encodeJson } from "../json.js";
import { validate } from "../schema.js";
import type { SqlApiQueries } from "../sql/sql-api.js";

export interface SqlSettings {
  signalRetentionMs: number;
  idempotencyWindowMs: number;
}

/** Records this engine's machines and the options the SQL functions follow. */
export async function recordForSql(
  pool: pg.Pool,
  q: SqlApiQueries,
  schema: string,
  machines: ReadonlyMap<string, AnyMachine>,
  settings: SqlSettings,
): Promise<void> {
  const defined = [...machines.values()].sort((a, b) => (a.name < b.name ? -1 : 1));
  await withTransaction(pool, async (client) => {
    await q.lock(client, { key: `gen_durable:sql_api:${schema}` });
    if (defined.length > 0) await q.recordMachines(client, { machines: defined });
    await q.recordSettings(client, {
      settings: {
        idempotency_window_ms: String(settings.idempotencyWindowMs),
        signal_retention_ms: String(settings.signalRetentionMs),
      },
    });
  });
}

/**
 * The state of a claimed row inserted from SQL, checked as engine.insert checks it: the
 * machine's schema (its output is what the step sees, and is stored), then the payload limit.
 * Throws the ValidationError that fails the instance. Returns null when the claim was lost.
 */
export async function acceptSqlState(
  pool: pg.Pool,
  q: SqlApiQueries,
  row: { id: string; claim_token: string; state: unknown },
  machine: AnyMachine,
  maxPayloadBytes: number,
): Promise<{ state: unknown } | null> {
  const what = `${machine.kind === "job" ? "args" : "state"} of ${machine.name} (inserted from SQL)`;
  const { value: state } = await validate(machine.schema, row.state, what);
  const json = encodeJson(state, what, maxPayloadBytes);
  const { rowCount } = await q.acceptState(pool, {
    id: row.id,
    token: row.claim_token,
    state: json,
    version: machine.version ?? 1,
  });
  return rowCount === 0 ? null : { state };
}
