/**
 * Machines that change while instances are in flight: upcasting the state of
 * an instance written by an older version of its machine (when it is claimed),
 * finding live instances parked at steps the definitions no longer have, and
 * moving an instance that is not running to another step (an operator's repair).
 * Every change is recorded in the instance's history.
 */
import type pg from "pg";
import type { AnyMachine } from "../define.js";
import { describe } from "../duration.js";
import { InvalidStateError, UnknownInstanceError, ValidationError } from "../errors.js";
import { encodeJson } from "../json.js";
import { checkName } from "../names.js";
import { validate } from "../schema.js";
import type { ClaimedRow } from "./attempt.js";
import type { VersionQueries } from "../sql/versions.js";

/**
 * The state of an instance written by version `from` of `machine`, upcast to its version: each upcaster
 * in turn (a version without one keeps the state), then checked by the schema. Throws a ValidationError
 * when an upcaster throws, the result does not match, or the instance is newer than this definition.
 */
/** The state upcast from version `from` to the machine's, checked by its schema; boxed (see validate). */
export async function upcastState(machine: AnyMachine, from: number, state: unknown): Promise<{ value: unknown }> {
  const where = `machine "${machine.name}"`;
  if (from > machine.version) {
    throw new ValidationError(
      `${where}: the instance was written by version ${from} of its machine; ` +
        `this node runs version ${machine.version} (deploy the newer definition)`,
    );
  }
  let value = state;
  for (let version = from + 1; version <= machine.version; version++) {
    const upcaster = machine.migrations.get(version);
    if (!upcaster) continue;
    try {
      value = await upcaster(value);
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      throw new ValidationError(`${where}: migrate[${version}] threw: ${message}`);
    }
  }
  const label = `the state of ${where} upcast from version ${from} to ${machine.version}`;
  return validate(machine.schema, value, label);
}

/** Records the upcast state of a claimed row; false when its claim was lost meanwhile. */
export async function recordUpcast(
  pool: pg.Pool,
  q: VersionQueries,
  row: ClaimedRow,
  state: unknown,
  version: number,
  maxPayloadBytes: number,
): Promise<boolean> {
  const json = encodeJson(state, "the upcast state", maxPayloadBytes);
  const { rowCount } = await q.upcast(pool, { id: row.id, token: row.claim_token, state: json, version });
  return (rowCount ?? 0) > 0;
}

/** A live instance parked at a step its machine no longer has. */
export interface StrandedInstance {
  /** The instance's id. */
  id: string;
  /** The name of its machine. */
  machine: string;
  /** The step it is parked at, which its machine does not have. */
  step: string;
  /** Its status (a live one). */
  status: string;
}

/** Live instances of `machines` parked at steps the definitions do not have (at most `limit`). */
export async function findStranded(
  pool: pg.Pool,
  q: VersionQueries,
  machines: ReadonlyMap<string, AnyMachine>,
  limit = 1000,
): Promise<StrandedInstance[]> {
  if (machines.size === 0) return [];
  const { rows } = await q.stranded(pool, { steps: stepsOf(machines), limit });
  return rows;
}

/** { machine: [its steps] }, as the statements take them. */
function stepsOf(machines: ReadonlyMap<string, AnyMachine>): Record<string, string[]> {
  return Object.fromEntries([...machines].map(([name, m]) => [name, [...m.steps.keys()]]));
}

/**
 * What engine.start() checks: the stranded instances of the machines whose definition the last
 * check did not run against, or that it found stranded (findStranded reads every live instance of
 * a machine; a start on an unchanged definition need not). What it finds is recorded per machine.
 */
export async function findStrandedAtStart(
  pool: pg.Pool,
  q: VersionQueries,
  machines: ReadonlyMap<string, AnyMachine>,
  limit = 1000,
): Promise<StrandedInstance[]> {
  if (machines.size === 0) return [];
  const { rows: due } = await q.checksDue(pool, { steps: stepsOf(machines) });
  if (due.length === 0) return [];
  const checked = new Map(due.map(({ machine }) => [machine, machines.get(machine)!]));
  const stranded = await findStranded(pool, q, checked, limit);
  // At the limit, a machine without a row in the list may still have some: it is checked again.
  const found = stranded.length >= limit ? [...checked.keys()] : [...new Set(stranded.map((s) => s.machine))];
  await q.recordChecks(pool, { steps: stepsOf(checked), stranded: found });
  return stranded;
}

/** What engine.check() reports: live instances the current definitions cannot run. */
export interface CheckReport {
  /** true when no live instance is stranded. */
  ok: boolean;
  /** The stranded instances (at most 1000). */
  stranded: StrandedInstance[];
}

export function strandedError(stranded: StrandedInstance[]): Error {
  const list = stranded
    .slice(0, 20)
    .map((s) => `${s.id} (${s.machine} at "${s.step}", ${s.status})`)
    .join(", ");
  const more = stranded.length > 20 ? ` and ${stranded.length - 20} more` : "";
  return Object.assign(
    new Error(
      `${stranded.length} live instance(s) are parked at steps their machine no longer has: ${list}${more}. ` +
        "Deploy a definition with those steps, or move them (engine.move / gen-durable move)",
    ),
    { name: "StrandedInstancesError", stranded },
  );
}

/** Where `engine.move` puts an instance. */
export interface MoveOptions {
  /** The step to move it to, runnable now. */
  step: string;
  /** Its new state, checked by its machine's schema; default: the state it has. */
  state?: unknown;
}

/**
 * Moves an instance that is not running to `step` (with `state` when given), runnable now. Checked against
 * its machine when `machines` has it; otherwise (the CLI, without definitions) only the names are checked.
 */
export async function moveInstance(
  client: pg.ClientBase,
  q: VersionQueries,
  machines: ReadonlyMap<string, AnyMachine>,
  id: string,
  options: MoveOptions,
  channel: string,
  maxPayloadBytes: number,
): Promise<void> {
  const bad = (m: string) => new ValidationError(`move: ${m}`);
  if (typeof options !== "object" || options === null)
    throw bad(`options must be { step, state? }, got ${describe(options)}`);
  const step = checkName(options.step, "step", bad);
  // The step and the state are checked before the row is locked: a claim skips a locked row, and
  // one that met it runnable while a move it then refused held it would leave it to the next poll.
  // An instance's machine never changes, so it is read without the lock.
  const found = (await q.machineOf(client, { id })).rows[0];
  if (!found) throw new UnknownInstanceError(id);
  const machine = machines.get(found.machine);
  let state = options.state;
  if (machine) {
    if (!machine.steps.has(step)) {
      throw bad(`machine "${machine.name}" has no step "${step}" (its steps: ${[...machine.steps.keys()].join(", ")})`);
    }
    if (state !== undefined)
      ({ value: state } = await validate(machine.schema, state, `move: the state of ${machine.name}`));
  }
  const json = state === undefined ? null : encodeJson(state, "move: state", maxPayloadBytes);
  // Refused from here on only when it is running, joining or finished: never a runnable row.
  const { rows } = await q.lockForMove(client, { id });
  const row = rows[0];
  if (!row) throw new UnknownInstanceError(id);
  if (!["runnable", "awaiting", "failed"].includes(row.status)) {
    throw new InvalidStateError(
      `move: instance ${id} is ${row.status}; only runnable, awaiting or failed instances can be moved`,
    );
  }
  // A new state is written by this definition's version; without one the stored state keeps its own.
  const version = machine && state !== undefined ? machine.version : null;
  await q.move(client, { id, step, state: json, version, channel, fromStep: row.step });
}
