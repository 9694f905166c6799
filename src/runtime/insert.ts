/** Turning insert options into rows for the bulk insert statement, with every check before any write. */
import type { AnyMachine, InstanceOptions } from "../define.js";
import { checkMaxAttempts } from "../define.js";
import { checkRunAt, describe, toMs } from "../duration.js";
import { ValidationError } from "../errors.js";
import { checkJson } from "../json.js";
import { checkKey, checkName } from "../names.js";
import { isStandardSchema, validateNow } from "../schema.js";
import { rejectUnknownKeys } from "../suggest.js";
import { concurrencyKeyOf, concurrencyLimitOf } from "./definition-flow.js";
import { captureTraceContext } from "../telemetry/propagation.js";
import type { InsertRow } from "../sql/instances.js";

/** A row of the bulk insert statement (declared beside it). */
export type { InsertRow };

/**
 * Set on a machine whose state the engine cannot check at insert (the CLI's stand-in, which has no
 * schema): its rows are stored unvalidated, as rows inserted from SQL are, and checked against the
 * real definition by the node that claims them (which also stores its version, and from which a
 * concurrency key takes the machine's recorded limit).
 */
export const UNCHECKED_STATE = Symbol("gen-durable: state not checked at insert");

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

/** An item of insertMany or of a spawn: the options with the machine among them. */
const ITEM_KEYS = [...OPTION_KEYS, "machine"];

/**
 * The row that inserts `machine` with `options`, every option checked. Synchronous unless the
 * machine's schema validates asynchronously: a bulk insert of plain jobs makes no promise per row.
 * Throws (or rejects with) a ValidationError. `inItem`: the options are an item of a list, which
 * holds `machine` too.
 */
export function prepareInsert(
  machine: AnyMachine,
  options: InstanceOptions & { state?: unknown; args?: unknown },
  idx: number,
  where: string,
  maxPayloadBytes: number,
  inItem = false,
): InsertRow | Promise<InsertRow> {
  // Before any await: the caller's context (its request's span).
  const traceContext = captureTraceContext();
  if (
    typeof machine !== "object" ||
    machine === null ||
    !(machine.steps instanceof Map) ||
    !isStandardSchema(machine.schema)
  ) {
    throw invalid(
      where,
      `the first argument must be a machine from defineMachine or defineJob, got ${describe(machine)}`,
    );
  }
  const label = `${where} ${machine.name}`;
  if (typeof options !== "object" || options === null)
    throw invalid(where, `options must be an object, got ${describe(options)}`);
  rejectUnknownKeys(options, inItem ? ITEM_KEYS : OPTION_KEYS, label, toValidationError);
  const isJob = machine.kind === "job";
  if (isJob && "state" in options) throw invalid(where, `${machine.name} is a job: pass { args }, not { state }`);
  if (!isJob && "args" in options) throw invalid(where, `${machine.name} is a machine: pass { state }, not { args }`);
  const input = isJob ? options.args : options.state;
  const what = `${isJob ? "args" : "state"} of ${machine.name}`;
  const validated = validateNow(machine.schema, input, what);
  if (validated instanceof Promise) {
    return validated.then(({ value }) =>
      rowOf(machine, options, idx, where, maxPayloadBytes, value, what, traceContext),
    );
  }
  return rowOf(machine, options, idx, where, maxPayloadBytes, validated.value, what, traceContext);
}

const toValidationError = (m: string) => new ValidationError(m);
/** The ValidationError of an insert option, named by `where`. */
const invalid = (where: string, m: string) => new ValidationError(`${where}: ${m}`);
/** `invalid` for checks that take a function (made only for an option that is there: no closure per plain row). */
const badIn = (where: string) => (m: string) => invalid(where, m);

/**
 * prepareInsert of each item ({ machine, ...options }) of a list, in order, every one checked
 * before anything is written; a promise only when a schema validates asynchronously.
 * `where(i)` names item i in errors; `notAnItem` is the error for an item that is not an object.
 */
export function prepareItems(
  items: readonly unknown[],
  where: (i: number) => string,
  notAnItem: (i: number, item: unknown) => Error,
  maxPayloadBytes: number,
): InsertRow[] | Promise<InsertRow[]> {
  const rows: Array<InsertRow | Promise<InsertRow>> = new Array(items.length);
  let pending = false;
  try {
    for (let i = 0; i < items.length; i++) {
      const item = items[i];
      if (typeof item !== "object" || item === null) throw notAnItem(i, item);
      const options = item as InstanceOptions & { machine: AnyMachine };
      const row = prepareInsert(options.machine, options, i, where(i), maxPayloadBytes, true);
      if (row instanceof Promise) pending = true;
      rows[i] = row;
    }
  } catch (error) {
    // The rows still validating: their rejections are not this call's error.
    for (const row of rows) if (row instanceof Promise) row.catch(() => {});
    throw error;
  }
  return pending ? Promise.all(rows) : (rows as InsertRow[]);
}

/** The rest of prepareInsert, once the state is validated: the state checked and every other option. */
function rowOf(
  machine: AnyMachine,
  options: InstanceOptions,
  idx: number,
  where: string,
  maxPayloadBytes: number,
  validated: unknown,
  what: string,
  traceContext: InsertRow["trace_context"],
): InsertRow {
  // The checked copy is what is stored: a second read of the original (a getter, a Proxy) may differ.
  const checked = checkJson(validated, what, maxPayloadBytes);
  if (options.delay !== undefined && options.runAt !== undefined) throw invalid(where, "pass delay or runAt, not both");
  const runAt = options.runAt === undefined ? null : checkRunAt(options.runAt, "runAt", badIn(where));
  const ifExists = options.ifExists;
  if (ifExists !== undefined && ifExists !== "reuse" && ifExists !== "reject" && ifExists !== "allow")
    throw invalid(where, `ifExists must be "reuse", "reject" or "allow", got ${describe(ifExists)}`);
  if (ifExists !== undefined && options.correlationKey === undefined)
    throw invalid(where, "ifExists needs a correlationKey: it says what to do when an instance with that key exists");
  const priority = options.priority ?? 0;
  const concurrencyKey = concurrencyKeyOf(machine, checked.value, options.concurrencyKey, where);
  if (!Number.isInteger(priority) || Math.abs(priority) > 2 ** 31 - 1)
    throw invalid(where, `priority must be an integer, got ${describe(options.priority)}`);
  return {
    idx,
    machine: machine.name,
    step: machine.initial,
    // The checked text (never of undefined: checkJson refused it); null is stored as JSON null (see sql/instances.ts).
    state: checked.text,
    queue: options.queue === undefined ? machine.queue : checkName(options.queue, "queue", badIn(where)),
    priority,
    run_at: runAt,
    delay_ms: options.delay === undefined ? null : toMs(options.delay, "delay", badIn(where)),
    max_attempts:
      options.maxAttempts === undefined
        ? null
        : checkMaxAttempts(options.maxAttempts, `${where}: maxAttempts`, toValidationError)!,
    correlation_key:
      options.correlationKey === undefined ? null : checkKey(options.correlationKey, "correlationKey", badIn(where)),
    concurrency_key: concurrencyKey,
    concurrency_limit: concurrencyLimitOf(machine, concurrencyKey),
    parent_id: null,
    idempotency_key:
      options.idempotencyKey === undefined ? null : checkKey(options.idempotencyKey, "idempotencyKey", badIn(where)),
    if_exists: ifExists === undefined || ifExists === "allow" ? null : ifExists,
    trace_context: traceContext,
    version: machine.version ?? 1,
    unvalidated: UNCHECKED_STATE in machine,
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
