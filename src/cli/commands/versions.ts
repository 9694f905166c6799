/**
 * `check` and `move`: the operator's side of evolving machines. The CLI has no machine definitions of its
 * own: --machines loads a module (an ES module or a TypeScript file run under tsx) whose exports include
 * the machines, the same objects the workers register.
 */
import { resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { EXIT_FAILURE, EXIT_OK, UsageError, type Command } from "../cli.js";
import { CLIENT_OPTIONS, idFrom, printJson, withClient } from "../client.js";
import type { AnyMachine } from "../../define.js";
import { findStranded, moveInstance } from "../../runtime/versions.js";
import { versionQueries } from "../../sql/versions.js";
import { withTransaction } from "../../db/pool.js";

export const MACHINES_OPTION = {
  type: "string",
  valueName: "module",
  description: "a module whose exports include the machine definitions (defineMachine / defineJob)",
} as const;

/** The machines a module exports (directly, or in an exported array or object), by name. */
export async function loadMachines(path: string, command: Command): Promise<Map<string, AnyMachine>> {
  let exports: Record<string, unknown>;
  try {
    exports = (await import(pathToFileURL(resolve(path)).href)) as Record<string, unknown>;
  } catch (error) {
    throw new UsageError(
      `--machines ${path} could not be loaded: ${error instanceof Error ? error.message : String(error)}`,
      command,
    );
  }
  const machines = new Map<string, AnyMachine>();
  const visit = (value: unknown, depth: number) => {
    if (typeof value !== "object" || value === null || depth > 2) return;
    if ((value as { steps?: unknown }).steps instanceof Map && typeof (value as { name?: unknown }).name === "string") {
      const machine = value as AnyMachine;
      machines.set(machine.name, machine);
      return;
    }
    for (const inner of Object.values(value)) visit(inner, depth + 1);
  };
  for (const value of Object.values(exports)) visit(value, 0);
  if (machines.size === 0) throw new UsageError(`--machines ${path} exports no machine definitions`, command);
  return machines;
}

export const checkCommand: Command = {
  name: "check",
  summary: "list live instances parked at steps the given definitions no longer have (exit 1 if any)",
  description: [
    "Loads the machine definitions from --machines and lists every live instance of",
    "those machines parked at a step they no longer have (engine.check). Run it before",
    "a deploy with the new definitions: exit 0 when none, 1 when some (listed), so a",
    "pipeline can stop. Repair them with gen-durable move, or keep the steps a while.",
  ].join("\n"),
  positionals: [],
  options: { machines: MACHINES_OPTION, ...CLIENT_OPTIONS },
  async run(values, io) {
    if (typeof values.machines !== "string") throw new UsageError("check needs --machines <module>", this);
    const machines = await loadMachines(values.machines, this);
    return withClient(this, values, io, async ({ pool, schema, json }) => {
      const stranded = await findStranded(pool, versionQueries(schema), machines);
      if (json) printJson(io, { ok: stranded.length === 0, stranded });
      else if (stranded.length === 0)
        io.out(`ok: no live instance of ${machines.size} machine(s) is parked at a missing step`);
      else {
        io.out(`${stranded.length} live instance(s) parked at steps their machine no longer has:`);
        for (const s of stranded) io.out(`  ${s.id}  ${s.machine}  step ${JSON.stringify(s.step)}  ${s.status}`);
      }
      return stranded.length === 0 ? EXIT_OK : EXIT_FAILURE;
    });
  },
};

export const moveCommand: Command = {
  name: "move",
  summary: "move an instance that is not running to another step (an operator's repair)",
  description: [
    "Moves a runnable, awaiting or failed instance to --step, with --state (JSON) when",
    'given: runnable now, attempts reset, recorded in its history as "moved" (engine.move).',
    "With --machines the step and state are checked against its machine; without, only",
    "the names are checked.",
  ].join("\n"),
  positionals: [{ name: "id", description: "the instance id" }],
  options: {
    step: { type: "string", valueName: "step", description: "the step to move it to" },
    state: { type: "string", valueName: "json", description: "its new state, as JSON (default: unchanged)" },
    machines: MACHINES_OPTION,
    ...CLIENT_OPTIONS,
  },
  async run(values, io, [text]) {
    const id = idFrom(text!, this);
    if (typeof values.step !== "string") throw new UsageError("move needs --step <step>", this);
    const step = values.step;
    let state: unknown;
    if (typeof values.state === "string") {
      try {
        state = JSON.parse(values.state);
      } catch (error) {
        throw new UsageError(
          `--state is not valid JSON (${error instanceof Error ? error.message : String(error)})`,
          this,
        );
      }
    }
    const machines = typeof values.machines === "string" ? await loadMachines(values.machines, this) : new Map();
    return withClient(this, values, io, async ({ pool, schema, json }) => {
      await withTransaction(pool, (client) =>
        moveInstance(client, versionQueries(schema), machines, id, { step, state }, `gen_durable_${schema}`, 1 << 20),
      );
      if (json) printJson(io, { id, step, status: "runnable" });
      else io.out(`instance ${id} moved to step ${JSON.stringify(step)}; it is runnable`);
      return EXIT_OK;
    });
  },
};
