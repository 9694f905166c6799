/** Turning insert options into rows for the bulk insert statement, with every check before any write. */
import type { AnyMachine, InstanceOptions } from "../define.js";
import { checkMaxAttempts } from "../define.js";
import { checkRunAt, describe, toMs } from "../duration.js";
import { ValidationError } from "../errors.js";
import { checkJson } from "../json.js";
import { checkKey, checkName } from "../names.js";
import { isStandardSchema, validate } from "../schema.js";
import { rejectUnknownKeys } from "../suggest.js";
import { concurrencyKeyOf, concurrencyLimitOf } from "./definition-flow.js";
import { captureTraceContext } from "../telemetry/propagation.js";
import type { InsertRow } from "../sql/instances.js";

/** A row of the bulk insert statement (declared beside it). */
export type { InsertRow };

/**
 * The advisory locks (lock_keys) an insert of `row` takes: its concurrency key, its idempotency
 * key, and its correlation key when ifExists looks for finished twins. A transaction that inserts
 * rows after locking other keys (a spawn) takes these with them, in the one global order.
 */
export function lockNamesOf(row: InsertRow): string[] {
  const names: string[] = [];
  if (row.concurrency_key !== null) names.push(row.concurrency_key);
  if (row.idempotency_key !== null) names.push(`idempotency:${row.idempotency_key}`);
  if (row.if_exists !== null) names.push(`correlation:${row.correlation_key!}`);
  return names;
}

const OPTION_KEYS = [
  "state",
  "args",
  "queue",
  "priority",
  "delay",
  "runAt",
  "maxAttempts",
  "correlationKey",
  "concurrencyKey",
  "idempotencyKey",
  "ifExists",
  "client",
];

export async function prepareInsert(
  machine: AnyMachine,
  options: InstanceOptions & { state?: unknown; args?: unknown },
  idx: number,
  where: string,
  maxPayloadBytes: number,
): Promise<InsertRow> {
  const bad = (m: string) => new ValidationError(`${where}: ${m}`);
  // Before any await: the caller's context (its request's span).
  const traceContext = captureTraceContext();
  if (
    typeof machine !== "object" ||
    machine === null ||
    !(machine.steps instanceof Map) ||
    !isStandardSchema(machine.schema)
  ) {
    throw bad(`the first argument must be a machine from defineMachine or defineJob, got ${describe(machine)}`);
  }
  const label = `${where} ${machine.name}`;
  if (typeof options !== "object" || options === null) throw bad(`options must be an object, got ${describe(options)}`);
  rejectUnknownKeys(options, OPTION_KEYS, label, (m) => new ValidationError(m));
  const isJob = machine.kind === "job";
  if (isJob && "state" in options) throw bad(`${machine.name} is a job: pass { args }, not { state }`);
  if (!isJob && "args" in options) throw bad(`${machine.name} is a machine: pass { state }, not { args }`);
  const input = isJob ? options.args : options.state;
  const { value: validated } = await validate(machine.schema, input, `${isJob ? "args" : "state"} of ${machine.name}`);
  // The checked copy is what is stored: a second read of the original (a getter, a Proxy) may differ.
  const { value: state } = checkJson(validated, `${isJob ? "args" : "state"} of ${machine.name}`, maxPayloadBytes);

  if (options.delay !== undefined && options.runAt !== undefined) throw bad("pass delay or runAt, not both");
  const runAt = options.runAt === undefined ? null : checkRunAt(options.runAt, "runAt", bad);
  const ifExists = options.ifExists;
  if (ifExists !== undefined && ifExists !== "reuse" && ifExists !== "reject" && ifExists !== "allow")
    throw bad(`ifExists must be "reuse", "reject" or "allow", got ${describe(ifExists)}`);
  if (ifExists !== undefined && options.correlationKey === undefined)
    throw bad("ifExists needs a correlationKey: it says what to do when an instance with that key exists");
  const priority = options.priority ?? 0;
  const concurrencyKey = concurrencyKeyOf(machine, state, options.concurrencyKey, where);
  if (!Number.isInteger(priority) || Math.abs(priority) > 2 ** 31 - 1)
    throw bad(`priority must be an integer, got ${describe(options.priority)}`);
  return {
    idx,
    machine: machine.name,
    step: machine.initial,
    // Never undefined here (encodeJson refused it); null is stored as JSON null (see sql/instances.ts).
    state,
    queue: options.queue === undefined ? machine.queue : checkName(options.queue, "queue", bad),
    priority,
    run_at: runAt,
    delay_ms: options.delay === undefined ? null : toMs(options.delay, "delay", bad),
    max_attempts: checkMaxAttempts(options.maxAttempts, `${where}: maxAttempts`, (m) => new ValidationError(m)) ?? null,
    correlation_key:
      options.correlationKey === undefined ? null : checkKey(options.correlationKey, "correlationKey", bad),
    concurrency_key: concurrencyKey,
    concurrency_limit: concurrencyLimitOf(machine, concurrencyKey),
    parent_id: null,
    idempotency_key:
      options.idempotencyKey === undefined ? null : checkKey(options.idempotencyKey, "idempotencyKey", bad),
    if_exists: ifExists === undefined || ifExists === "allow" ? null : ifExists,
    trace_context: traceContext,
    version: machine.version ?? 1,
  };
}

/**
 * A batch's rows with each correlation and idempotency key once: a later row that repeats a key
 * refers to the first row that carries it (`firstOf` gives that row's idx). A repeated key with
 * ifExists "reject" is refused: the batch would start the same work twice.
 */
export function firstOfEachKey(rows: readonly InsertRow[]): {
  unique: InsertRow[];
  firstOf: (row: InsertRow) => number;
} {
  const byCorrelation = new Map<string, number>();
  const byIdempotency = new Map<string, number>();
  const firsts = new Map<number, number>();
  const unique = rows.filter((row) => {
    const first =
      (row.idempotency_key === null ? undefined : byIdempotency.get(row.idempotency_key)) ??
      (row.correlation_key === null ? undefined : byCorrelation.get(row.correlation_key));
    if (first !== undefined) {
      if (row.if_exists === "reject" && row.idempotency_key === null) {
        const key = JSON.stringify(row.correlation_key);
        throw new ValidationError(
          `insertMany: items ${first} and ${row.idx} share the correlation key ${key}, and ifExists is "reject"`,
        );
      }
      firsts.set(row.idx, first);
      return false;
    }
    if (row.correlation_key !== null) byCorrelation.set(row.correlation_key, row.idx);
    if (row.idempotency_key !== null) byIdempotency.set(row.idempotency_key, row.idx);
    return true;
  });
  return { unique, firstOf: (row) => firsts.get(row.idx)! };
}
