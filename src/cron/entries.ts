/**
 * Cron entries: the `cron` engine option, checked once at construction so a
 * bad schedule, timezone, machine or state is a ConfigError before anything
 * runs, and the schedule arithmetic the cron loop needs (next tick, latest
 * tick). Schedules are parsed by croner: 5 fields, or 6 with seconds first;
 * times are computed in the entry's IANA timezone (default UTC).
 */
import { Cron } from "croner";
import type { InputOf } from "../machine-types.js";
import type { AnyMachine } from "../define.js";
import { describe } from "../duration.js";
import { ConfigError } from "../errors.js";
import { checkJson } from "../json.js";
import { checkName } from "../names.js";
import { isStandardSchema, validate, type StandardSchemaV1 } from "../schema.js";
import { didYouMean, rejectUnknownKeys } from "../suggest.js";

/** What to do with ticks that came due while no node ran the cron loop. */
export type MissedPolicy = "latest" | "skip";

/** One recurring insert: every tick of `schedule` inserts one instance of `machine`, once across all nodes. */
export interface CronEntry {
  /** Stable name: the key of its ticks in the database (keep it across deploys). */
  name: string;
  /** "m h dom mon dow", or "s m h dom mon dow" (seconds first); nicknames such as "@daily" too. */
  schedule: string;
  /** IANA timezone the schedule is read in, e.g. "America/New_York". Default "UTC". */
  timezone?: string;
  /** The machine or job to insert (or its name); it must be in `machines`. */
  machine: AnyMachine | string;
  /** Initial state of a machine. */
  state?: unknown;
  /** Args of a job. */
  args?: unknown;
  /** Priority of each inserted instance. Default 0. */
  priority?: number;
  /** Queue of each inserted instance. Default: the machine's. */
  queue?: string;
  /**
   * Ticks missed while every node was down: "latest" (default) inserts one instance for the most recent of them, "skip"
   * none.
   */
  missed?: MissedPolicy;
}

/** Each cron entry checked against its machine: `state` / `args` must match its schema (a name is not checked). */
export type CheckedCron<T> = { readonly [I in keyof T]: CronFor<T[I]> };
type CronFor<X> = X extends { machine: infer M extends AnyMachine }
  ? Omit<CronEntry, "machine" | "state" | "args"> & { machine: M } & InputOf<M>
  : CronEntry;

export interface ResolvedCronEntry {
  name: string;
  schedule: string;
  timezone: string;
  machine: AnyMachine;
  /** The validated state/args (the schema's output), or the raw input while `deferred`. */
  state: unknown;
  /**
   * The schema validates asynchronously: `state` is checked by engine.start() (checkDeferredCron) before any loop runs.
   */
  deferred: boolean;
  queue: string;
  priority: number;
  missed: MissedPolicy;
  /** The first tick strictly after `afterMs` (epoch ms), or null when the schedule never fires again. */
  next(afterMs: number): number | null;
  /** The latest tick at or before `atMs`, or null when there is none. */
  latest(atMs: number): number | null;
}

const KEYS = [
  "name",
  "schedule",
  "timezone",
  "machine",
  "state",
  "args",
  "priority",
  "queue",
  "missed",
] as const satisfies ReadonlyArray<keyof CronEntry>;

/** Checks the `cron` option against this node's machines. `fail` makes a ConfigError with the engine's prefix. */
export function resolveCron(
  value: unknown,
  machines: ReadonlyMap<string, AnyMachine>,
  maxPayloadBytes: number,
  fail: (message: string) => ConfigError,
): ResolvedCronEntry[] {
  if (value === undefined) return [];
  if (!Array.isArray(value))
    throw fail(
      `cron must be an array of entries such as [{ name, schedule: "*/5 * * * *", machine }], got ${describe(value)}`,
    );
  const seen = new Map<string, number>();
  return value.map((entry: unknown, i) => {
    if (typeof entry !== "object" || entry === null || Array.isArray(entry))
      throw fail(`cron[${i}] must be an object { name, schedule, machine, ... }, got ${describe(entry)}`);
    rejectUnknownKeys(entry, KEYS, `GenDurable: cron[${i}]`, (m) => new ConfigError(m));
    const e = entry as CronEntry;
    const name = checkName(e.name, `cron[${i}].name`, fail);
    const where = `cron entry "${name}"`;
    const twin = seen.get(name);
    if (twin !== undefined)
      throw fail(`cron[${twin}] and cron[${i}] are both named "${name}"; each entry needs its own name`);
    seen.set(name, i);

    const timezone = e.timezone === undefined ? "UTC" : checkTimezone(e.timezone, where, fail);
    const cron = parseSchedule(e.schedule, timezone, where, fail);
    const machine = findMachine(e.machine, machines, where, fail);
    const isJob = machine.kind === "job";
    if (isJob && e.state !== undefined) throw fail(`${where}: ${machine.name} is a job: pass args, not state`);
    if (!isJob && e.args !== undefined) throw fail(`${where}: ${machine.name} is a machine: pass state, not args`);
    const input = isJob ? e.args : e.state;
    const label = `${where}: ${isJob ? "args" : "state"} of ${machine.name}`;
    const checked = validateNow(machine.schema, input, label, fail);
    // As insert checks it: a value the schema accepts may still not be storable (undefined, say).
    // The checked copy is what is stored: a second read of the original (a getter, a Proxy) may differ.
    const state = checked.deferred ? checked.value : checkStorable(checked.value, label, maxPayloadBytes, fail);

    const priority = e.priority ?? 0;
    if (typeof priority !== "number" || !Number.isInteger(priority) || Math.abs(priority) > 2 ** 31 - 1) {
      throw fail(`${where}: priority must be an integer, got ${describe(e.priority)}`);
    }
    const queue = e.queue === undefined ? machine.queue : checkName(e.queue, `${where}: queue`, fail);
    const missed = e.missed ?? "latest";
    if (missed !== "latest" && missed !== "skip")
      throw fail(`${where}: missed must be "latest" or "skip", got ${describe(e.missed)}`);

    return Object.freeze({
      name,
      schedule: e.schedule,
      timezone,
      machine,
      state,
      deferred: checked.deferred,
      queue,
      priority,
      missed,
      next: (afterMs: number) => cron.nextRun(new Date(afterMs))?.getTime() ?? null,
      // previousRuns is strictly before its reference: one ms later makes it "at or before".
      latest: (atMs: number) => cron.previousRuns(1, new Date(atMs + 1))[0]?.getTime() ?? null,
    });
  });
}

/**
 * Validates the entries whose schema validates asynchronously (engine.start()
 * awaits this before any loop runs) and returns every entry with its checked
 * value. An invalid or unstorable value is a ConfigError naming the entry.
 */
export async function checkDeferredCron(
  entries: readonly ResolvedCronEntry[],
  maxPayloadBytes: number,
  fail: (message: string) => ConfigError,
): Promise<readonly ResolvedCronEntry[]> {
  if (!entries.some((e) => e.deferred)) return entries;
  return Promise.all(
    entries.map(async (entry) => {
      if (!entry.deferred) return entry;
      const what = entry.machine.kind === "job" ? "args" : "state";
      const label = `cron entry "${entry.name}": ${what} of ${entry.machine.name}`;
      let value: unknown;
      try {
        ({ value } = await validate(entry.machine.schema, entry.state, label));
      } catch (error) {
        throw fail((error as Error).message);
      }
      const state = checkStorable(value, label, maxPayloadBytes, fail);
      return Object.freeze({ ...entry, state, deferred: false });
    }),
  );
}

/** The plain copy of `value` to store, or a ConfigError saying why it cannot be stored. */
function checkStorable(
  value: unknown,
  label: string,
  maxPayloadBytes: number,
  fail: (m: string) => ConfigError,
): unknown {
  try {
    return checkJson(value, label, maxPayloadBytes).value;
  } catch (error) {
    throw fail((error as Error).message);
  }
}

function checkTimezone(value: unknown, where: string, fail: (m: string) => ConfigError): string {
  if (typeof value !== "string" || value === "")
    throw fail(`${where}: timezone must be an IANA timezone name such as "America/New_York", got ${describe(value)}`);
  try {
    // Intl knows the same IANA database croner uses; an unknown name is a RangeError.
    new Intl.DateTimeFormat("en-US", { timeZone: value });
  } catch {
    throw fail(
      `${where}: unknown timezone "${value}"; use an IANA name such as "America/New_York", "Europe/Paris" or "UTC"`,
    );
  }
  return value;
}

function parseSchedule(value: unknown, timezone: string, where: string, fail: (m: string) => ConfigError): Cron {
  if (typeof value !== "string" || value.trim() === "") {
    throw fail(
      `${where}: schedule must be a cron expression such as "*/5 * * * *" (5 fields, or 6 with seconds first), ` +
        `got ${describe(value)}`,
    );
  }
  let cron: Cron;
  try {
    // paused: croner only computes times here; it never runs a timer of its own.
    cron = new Cron(value, { paused: true, timezone, mode: "5-or-6-parts" });
  } catch (error) {
    throw fail(
      `${where}: schedule "${value}" is not a valid cron expression (5 fields, or 6 with seconds first): ` +
        `${(error as Error).message}`,
    );
  }
  // A pattern that parses may still never match (say, February 30th): better said now than never fired.
  if (cron.nextRun(new Date()) === null) throw fail(`${where}: schedule "${value}" never fires`);
  return cron;
}

function findMachine(
  value: unknown,
  machines: ReadonlyMap<string, AnyMachine>,
  where: string,
  fail: (m: string) => ConfigError,
): AnyMachine {
  const names = [...machines.keys()];
  const known = names.length > 0 ? `machines has ${names.map((n) => `"${n}"`).join(", ")}` : "machines is empty";
  if (typeof value === "string") {
    const machine = machines.get(value);
    if (!machine) throw fail(`${where}: machine "${value}" is not in machines (${known})${didYouMean(value, names)}`);
    return machine;
  }
  if (
    typeof value !== "object" ||
    value === null ||
    !((value as AnyMachine).steps instanceof Map) ||
    typeof (value as AnyMachine).name !== "string"
  ) {
    throw fail(
      `${where}: machine must be a machine or job from defineMachine/defineJob (or its name), got ${describe(value)}`,
    );
  }
  const machine = value as AnyMachine;
  if (machines.get(machine.name) !== machine) {
    // Only a node that may run the machine fires its entry: the definition here is the one that will run it.
    throw fail(`${where}: machine "${machine.name}" is not in machines (${known}); add it to machines`);
  }
  return machine;
}

/**
 * Validates synchronously when the schema allows (zod, valibot and arktype do
 * for synchronous schemas). An asynchronous schema cannot be checked in a
 * constructor: its value is checked by engine.start() (checkDeferredCron).
 */
function validateNow(
  schema: StandardSchemaV1,
  value: unknown,
  label: string,
  fail: (m: string) => ConfigError,
): { value: unknown; deferred: boolean } {
  if (!isStandardSchema(schema)) throw fail(`${label}: the machine has no Standard Schema`);
  const result = schema["~standard"].validate(value);
  if (result instanceof Promise) {
    // Not awaited here: start() validates again. Swallow this copy's rejection.
    result.catch(() => {});
    return { value, deferred: true };
  }
  if (result.issues) throw fail(`${label} is invalid: ${formatIssues(result.issues)}`);
  return { value: result.value, deferred: false };
}

function formatIssues(issues: ReadonlyArray<StandardSchemaV1.Issue>): string {
  const text = issues
    .slice(0, 5)
    .map((issue) => {
      const path = issue.path?.map((p) => String(typeof p === "object" ? p.key : p)) ?? [];
      return path.length > 0 ? `${path.join(".")}: ${issue.message}` : issue.message;
    })
    .join("; ");
  return issues.length > 5 ? `${text} (and ${issues.length - 5} more)` : text;
}
