/**
 * The typed edges of a machine at run time: declared signals and result
 * (checked with their schemas), version and upcasters, declared transitions
 * and the static graph they make. defineMachine and defineJob call
 * resolveTyping once; the executor, judge and engine call the checks.
 */
import type { AnyMachine, ResolvedStep } from "./define.js";
import { describe } from "./duration.js";
import { ConfigError, ValidationError } from "./errors.js";
import type { ReceivedSignal } from "./machine-types.js";
import { checkName } from "./names.js";
import { isStandardSchema, validate, type StandardSchemaV1 } from "./schema.js";

/** Upcasters by the version they produce (2: v1 -> v2, ...). */
export type Migrations = ReadonlyMap<number, (state: unknown) => unknown>;

/** A machine's static graph: every step with the steps it declares it may go to (null: any step). */
export interface MachineGraph {
  /** The machine's name. */
  machine: string;
  /** The step instances start at. */
  initial: string;
  /** Every step, in declaration order. */
  steps: Array<{
    /** The step's name. */
    name: string;
    /** Its declared targets; null when it declares none (any step). */
    to: string[] | null;
  }>;
  /** Every declared edge, plus one from the start to `initial`. */
  edges: Array<{
    /** The step the edge leaves; null for the start. */
    from: string | null;
    /** The step it goes to. */
    to: string;
  }>;
}

interface TypingInput {
  name?: unknown;
  signals?: unknown;
  result?: unknown;
  version?: unknown;
  migrate?: unknown;
}

const MAX_VERSION = 1_000_000;

export function resolveTyping(
  definition: TypingInput,
  steps: ReadonlyMap<string, ResolvedStep>,
  initial: string,
  where: string,
) {
  const bad = (m: string) => new ConfigError(`${where}: ${m}`);
  let signals: Record<string, StandardSchemaV1> | undefined;
  if (definition.signals !== undefined) {
    if (typeof definition.signals !== "object" || definition.signals === null) {
      throw bad(`signals must be an object { event: schema }, got ${describe(definition.signals)}`);
    }
    signals = {};
    for (const [event, schema] of Object.entries(definition.signals)) {
      checkName(event, "signals: event name", bad);
      if (!isStandardSchema(schema)) throw bad(`signals.${event} must be a Standard Schema (zod, valibot, ...)`);
      signals[event] = schema;
    }
    Object.freeze(signals);
  }
  if (definition.result !== undefined && !isStandardSchema(definition.result)) {
    throw bad("result must be a Standard Schema (zod, valibot, ...)");
  }
  const version = definition.version ?? 1;
  if (typeof version !== "number" || !Number.isInteger(version) || version < 1 || version > MAX_VERSION) {
    throw bad(`version must be an integer from 1 to ${MAX_VERSION}, got ${describe(definition.version)}`);
  }
  const migrations = new Map<number, (state: unknown) => unknown>();
  if (definition.migrate !== undefined) {
    if (typeof definition.migrate !== "object" || definition.migrate === null) {
      throw bad(`migrate must be an object { 2: (state) => newState, ... }, got ${describe(definition.migrate)}`);
    }
    for (const [key, fn] of Object.entries(definition.migrate)) {
      const to = Number(key);
      if (!Number.isInteger(to) || to < 2 || to > version) {
        throw bad(`migrate.${key}: keys are the versions an upcaster produces, from 2 to the version (${version})`);
      }
      if (typeof fn !== "function") throw bad(`migrate.${key} must be a function (state) => newState`);
      migrations.set(to, fn as (state: unknown) => unknown);
    }
  }
  for (const step of steps.values()) {
    for (const target of step.to ?? []) {
      if (!steps.has(target)) {
        throw bad(
          `step "${step.name}" declares to "${target}", ` +
            `which is not one of its steps (${[...steps.keys()].join(", ")})`,
        );
      }
    }
  }
  const name = typeof definition.name === "string" ? definition.name : "";
  const graph = (): MachineGraph => staticGraph(name, steps, initial);
  return {
    signals,
    result: definition.result as StandardSchemaV1 | undefined,
    version,
    migrations: migrations as Migrations,
    graph,
    toMermaid: () => toMermaid(graph()),
  };
}

/** A step's `to`: a non-empty array of step names (whether they exist is checked with the machine). */
export function checkTargets(value: unknown, where: string): readonly string[] {
  if (!Array.isArray(value) || value.length === 0 || value.some((v) => typeof v !== "string")) {
    throw new ConfigError(`${where} must be a non-empty array of step names, got ${describe(value)}`);
  }
  return Object.freeze([...new Set(value as string[])]);
}

function staticGraph(machine: string, steps: ReadonlyMap<string, ResolvedStep>, initial: string): MachineGraph {
  const list = [...steps.values()].map((s) => ({ name: s.name, to: s.to ? [...s.to] : null }));
  const edges: MachineGraph["edges"] = [{ from: null, to: initial }];
  for (const step of list) for (const to of step.to ?? []) edges.push({ from: step.name, to });
  return { machine, initial, steps: list, edges };
}

/** A Mermaid `stateDiagram-v2`; a step that declares no `to` gets a note saying it may go anywhere. */
export function toMermaid(graph: MachineGraph): string {
  const lines = ["stateDiagram-v2"];
  for (const edge of graph.edges) lines.push(`  ${edge.from ?? "[*]"} --> ${edge.to}`);
  for (const step of graph.steps) {
    if (step.to === null) lines.push(`  note right of ${step.name}: to any step`);
  }
  return lines.join("\n");
}

/** A transition the step declared: a step with `to` may only go to those steps. */
export function checkTransition(step: ResolvedStep | undefined, target: string, where: string, helper: string): void {
  if (!step?.to || step.to.includes(target)) return;
  throw new ValidationError(
    `${where}: ${helper} named "${target}", which step "${step.name}" does not declare (its to: ${step.to.join(", ")})`,
  );
}

/**
 * Checks a signal's payload against the machine's schema for `event`. A machine
 * that declares signals refuses an event it does not declare. Returns the
 * schema's output (the payload as the step sees it), boxed (see validate).
 */
export async function checkSignal(
  machine: AnyMachine,
  event: string,
  payload: unknown,
  where: string,
): Promise<{ value: unknown }> {
  const { signals } = machine;
  if (!signals) return { value: payload };
  const schema = signals[event];
  if (!schema) {
    throw new ValidationError(
      `${where}: machine "${machine.name}" declares no signal "${event}" ` +
        `(its signals: ${Object.keys(signals).join(", ") || "none"})`,
    );
  }
  return validate(schema, payload ?? null, `${where}: the payload of signal "${event}" to ${machine.name}`);
}

/** The signals an await consumed, each payload checked by the machine's schema before a step sees it. */
export async function checkAwaited(
  machine: AnyMachine,
  awaited: readonly ReceivedSignal[],
  where: string,
): Promise<readonly ReceivedSignal[]> {
  if (!machine.signals || awaited.length === 0) return awaited;
  return Promise.all(
    awaited.map(async (s) => ({ ...s, payload: (await checkSignal(machine, s.event, s.payload, where)).value })),
  );
}

/** Checks a result against the machine's `result` schema; returns what is stored, boxed (see validate). */
export async function checkResult(machine: AnyMachine, result: unknown, where: string): Promise<{ value: unknown }> {
  if (!machine.result) return { value: result };
  return validate(machine.result, result, `the result of ${where}`);
}
