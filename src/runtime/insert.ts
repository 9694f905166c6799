/** Turning insert options into rows for the bulk insert statement, with every check before any write. */
import type { AnyMachine, InstanceOptions } from "../define.js";
import { checkMaxAttempts } from "../define.js";
import { checkRunAt, describe, toMs } from "../duration.js";
import { ValidationError } from "../errors.js";
import { encodeJson } from "../json.js";
import { checkKey, checkName } from "../names.js";
import { isStandardSchema, validate } from "../schema.js";
import { rejectUnknownKeys } from "../suggest.js";

export interface InsertRow {
  idx: number;
  machine: string;
  step: string;
  state: unknown;
  queue: string;
  priority: number;
  run_at: string | null;
  delay_ms: number | null;
  max_attempts: number | null;
  correlation_key: string | null;
  concurrency_key: string | null;
  parent_id: string | null;
  /** The machine definition's version, stored with the instance (see machine-typing.ts: upcasters). */
  version: number;
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
  const state = await validate(machine.schema, input, `${isJob ? "args" : "state"} of ${machine.name}`);
  encodeJson(state, `${isJob ? "args" : "state"} of ${machine.name}`, maxPayloadBytes);

  if (options.delay !== undefined && options.runAt !== undefined) throw bad("pass delay or runAt, not both");
  const runAt = options.runAt === undefined ? null : checkRunAt(options.runAt, "runAt", bad);
  const priority = options.priority ?? 0;
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
    concurrency_key:
      options.concurrencyKey === undefined ? null : checkKey(options.concurrencyKey, "concurrencyKey", bad),
    parent_id: null,
    version: machine.version ?? 1,
  };
}
