/**
 * `insert <machine>`: inserts one instance from the command line. The CLI has no machine
 * definitions, so it inserts through engine.insert with a stand-in machine that names the
 * machine, its initial step and its queue and accepts any state: the row, the correlation-key
 * handling, the inbox hand-over and the NOTIFY are exactly the engine's.
 */
import type { AnyMachine } from "../../define.js";
import { parseDuration } from "../../duration.js";
import { UNCHECKED_STATE } from "../../runtime/insert.js";
import { checkName } from "../../names.js";
import { EXIT_OK, UsageError, type Command } from "../cli.js";
import { CLIENT_OPTIONS, printJson, withClient } from "../client.js";

/** Any JSON value is accepted here: the CLI cannot know the machine's schema. */
const ANY_STATE = { "~standard": { version: 1, vendor: "gen-durable-cli", validate: (value: unknown) => ({ value }) } };

/**
 * Enough of a machine for engine.insert: its name, kind, initial step and queue. Its rows are
 * stored unchecked (UNCHECKED_STATE), like rows inserted from SQL: the node that claims one checks
 * its state against the machine's schema, and a concurrency key takes the limit the machine's
 * engines recorded.
 */
export function standIn(name: string, kind: "machine" | "job", initial: string, queue: string): AnyMachine {
  return Object.freeze({
    kind,
    name,
    queue,
    schema: ANY_STATE,
    initial,
    steps: new Map([[initial, {}]]),
    maxAttempts: undefined,
    backoff: undefined,
    [UNCHECKED_STATE]: true,
  }) as unknown as AnyMachine;
}

export const insertCommand: Command = {
  name: "insert",
  summary: "insert one instance of a machine (--state) or job (--args)",
  description: [
    "Inserts an instance as engine.insert does (same statement: a live --correlation-key",
    "twin is returned instead, signals kept for the key are handed over, nodes are woken",
    "by NOTIFY). The CLI has no machine definitions: the machine's initial step is",
    '--step (default "start"; "perform" for a job) and its queue is --queue (default',
    '"default"). The state cannot be checked against the machine\'s schema here: the',
    "node that claims the instance checks it, as for an insert from SQL. A --concurrency-key",
    "takes the limit the machine's definition gives its keys, as its engines recorded it.",
    "Prints the instance id, and whether it was inserted or an existing twin.",
  ].join("\n"),
  positionals: [{ name: "machine", description: "the machine or job name" }],
  options: {
    state: { type: "string", valueName: "json", description: "the machine's initial state, as JSON" },
    args: { type: "string", valueName: "json", description: "a job's arguments, as JSON (instead of --state)" },
    step: {
      type: "string",
      valueName: "name",
      description: 'the initial step (default "start", "perform" with --args)',
    },
    queue: { type: "string", valueName: "name", description: 'the queue (default "default")' },
    priority: { type: "string", valueName: "n", description: "priority, an integer; higher runs first (default 0)" },
    delay: { type: "string", valueName: "duration", description: "run after this long, e.g. 30s, 5m" },
    "run-at": { type: "string", valueName: "time", description: "run at this time (ISO 8601)" },
    "correlation-key": {
      type: "string",
      valueName: "key",
      description: "the correlation key (unique among live instances)",
    },
    "concurrency-key": { type: "string", valueName: "key", description: "the concurrency key" },
    "max-attempts": { type: "string", valueName: "n", description: "attempts per step (default: the machine's)" },
    ...CLIENT_OPTIONS,
  },
  async run(values, io, [machineName]) {
    const usage = (m: string) => new UsageError(m, this);
    const name = checkName(machineName, "machine name", usage);
    if (values.state !== undefined && values.args !== undefined) throw usage("pass --state or --args, not both");
    if (values.state === undefined && values.args === undefined)
      throw usage("pass --state <json> (a machine) or --args <json> (a job)");
    const isJob = values.args !== undefined;
    const input = parseJson(String(isJob ? values.args : values.state), isJob ? "--args" : "--state", usage);
    const step = checkName(values.step ?? (isJob ? "perform" : "start"), "--step", usage);
    const queue = checkName(values.queue ?? "default", "--queue", usage);
    const options: Record<string, unknown> = isJob ? { args: input } : { state: input };
    if (values.priority !== undefined) options.priority = integer(String(values.priority), "--priority", usage);
    if (values["max-attempts"] !== undefined)
      options.maxAttempts = integer(String(values["max-attempts"]), "--max-attempts", usage);
    if (values.delay !== undefined) {
      const ms = parseDuration(values.delay, "--delay");
      if (typeof ms === "string") throw usage(ms);
      options.delay = ms;
    }
    if (values["run-at"] !== undefined) {
      const at = new Date(String(values["run-at"]));
      if (Number.isNaN(at.getTime()))
        throw usage(`--run-at must be a time such as 2030-01-01T09:00:00Z, got ${JSON.stringify(values["run-at"])}`);
      options.runAt = at;
    }
    if (values["correlation-key"] !== undefined) options.correlationKey = values["correlation-key"];
    if (values["concurrency-key"] !== undefined) options.concurrencyKey = values["concurrency-key"];
    const machine = standIn(name, isJob ? "job" : "machine", step, queue);
    return withClient(this, values, io, async ({ engine, json }) => {
      const { id, inserted } = await engine.insert(machine, options as never);
      if (json) printJson(io, { id, inserted, machine: name, step, queue });
      else
        io.out(
          inserted
            ? `inserted instance ${id} of ${name} (step ${step}, queue ${queue})`
            : `instance ${id} already holds correlation key ${JSON.stringify(options.correlationKey)}: ` +
                "nothing inserted",
        );
      return EXIT_OK;
    });
  },
};

function parseJson(text: string, what: string, usage: (m: string) => Error): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch (error) {
    throw usage(`${what} must be JSON, e.g. '{"order": 42}': ${(error as Error).message}`);
  }
}

function integer(text: string, what: string, usage: (m: string) => Error): number {
  if (!/^-?\d+$/.test(text.trim())) throw usage(`${what} must be an integer, got ${JSON.stringify(text)}`);
  return Number(text);
}
