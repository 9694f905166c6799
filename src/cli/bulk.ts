/**
 * Bulk `retry` and `cancel`: the instances a filter (--machine, --status, --queue, --older-than)
 * selects, each handed to engine.retry / engine.cancel in turn, exactly as one id would be.
 * Instances are read in id order in batches, so a large selection never sits in memory, and one
 * that changed meanwhile (finished, retried by someone else) is skipped with its reason.
 */
import type pg from "pg";
import { parseDuration } from "../duration.js";
import { GenDurableError } from "../errors.js";
import { STATUSES, type Status } from "../status.js";
import { checkName } from "../names.js";
import { cliQueries } from "../sql/cli.js";
import { EXIT_OK, UsageError, type Command, type Io } from "./cli.js";
import { printJson, withClient, withoutPrefix } from "./client.js";
import type { GenDurable } from "../engine.js";

export const FILTER_OPTIONS = {
  machine: { type: "string", valueName: "name", description: "bulk: instances of this machine" },
  status: { type: "string", valueName: "list", description: "bulk: instances in these statuses (comma-separated)" },
  queue: { type: "string", valueName: "name", description: "bulk: instances on this queue" },
  "older-than": {
    type: "string",
    valueName: "duration",
    description: "bulk: instances last updated longer ago than this (database clock), e.g. 1h, 2d",
  },
  "dry-run": { type: "boolean", description: "bulk: print how many instances match, change nothing" },
} as const;

export interface Filter {
  statuses: Status[];
  machine: string | null;
  queue: string | null;
  olderThanMs: number | null;
}

/** The filter of the command line, or undefined when none of its options was given. */
export function filterFrom(
  values: Record<string, unknown>,
  command: Command,
  allowed: readonly Status[],
  defaults: readonly Status[],
): Filter | undefined {
  const given = ["machine", "status", "queue", "older-than"].filter((k) => values[k] !== undefined);
  if (given.length === 0) {
    if (values["dry-run"])
      throw new UsageError("--dry-run needs a filter (--machine, --status, --queue, --older-than)", command);
    return undefined;
  }
  const usage = (m: string) => new UsageError(m, command);
  let statuses = [...defaults];
  if (values.status !== undefined) {
    statuses = String(values.status)
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean) as Status[];
    for (const status of statuses) {
      if (!STATUSES.includes(status))
        throw usage(`unknown status ${JSON.stringify(status)}; statuses are ${STATUSES.join(", ")}`);
      if (!allowed.includes(status))
        throw usage(`${command.name} applies to ${allowed.join(", ")} instances, not ${status}`);
    }
    if (statuses.length === 0) throw usage("--status needs at least one status");
  }
  let olderThanMs: number | null = null;
  if (values["older-than"] !== undefined) {
    const parsed = parseDuration(values["older-than"], "--older-than");
    if (typeof parsed === "string") throw usage(parsed);
    olderThanMs = parsed;
  }
  return {
    statuses,
    machine: values.machine === undefined ? null : checkName(values.machine, "--machine", usage),
    queue: values.queue === undefined ? null : checkName(values.queue, "--queue", usage),
    olderThanMs,
  };
}

export function describeFilter(filter: Filter): string {
  return [
    `status ${filter.statuses.join("|")}`,
    ...(filter.machine ? [`machine ${filter.machine}`] : []),
    ...(filter.queue ? [`queue ${filter.queue}`] : []),
    ...(filter.olderThanMs !== null ? [`updated more than ${filter.olderThanMs} ms ago`] : []),
  ].join(", ");
}

const BATCH = 500;

/**
 * Applies `act` to every instance the filter selects (or counts them with --dry-run); prints
 * the counts, and the first few skipped instances with their reasons.
 */
export async function applyToFilter(
  io: Io,
  pool: pg.Pool,
  schema: string,
  filter: Filter,
  options: { verb: string; past: string; dryRun: boolean; json: boolean },
  act: (id: string) => Promise<void>,
): Promise<number> {
  const q = cliQueries(schema);
  if (options.dryRun) {
    const { rows } = await q.count(pool, { selection: filter });
    const n = rows[0]!.n;
    if (options.json) printJson(io, { dryRun: true, matched: n, filter });
    else io.out(`would ${options.verb} ${n} ${n === 1 ? "instance" : "instances"} (${describeFilter(filter)})`);
    return EXIT_OK;
  }
  let done = 0;
  const skipped: Array<{ id: string; reason: string }> = [];
  for (let after = "0"; ;) {
    const { rows } = await q.ids(pool, { selection: filter, after, limit: BATCH });
    for (const { id } of rows) {
      try {
        await act(id);
        done++;
      } catch (error) {
        // The instance changed since it was selected, or the engine refuses it: say why, go on.
        if (!(error instanceof GenDurableError)) throw error;
        skipped.push({ id, reason: withoutPrefix(error.message, options.verb) });
      }
    }
    if (rows.length < BATCH) break;
    after = rows[rows.length - 1]!.id;
  }
  if (options.json) printJson(io, { [options.past]: done, skipped, filter });
  else {
    io.out(`${options.past} ${done} ${done === 1 ? "instance" : "instances"} (${describeFilter(filter)})`);
    if (skipped.length > 0) {
      io.out(`skipped ${skipped.length}:`);
      for (const s of skipped.slice(0, 20)) io.out(`  ${s.id}: ${s.reason}`);
      if (skipped.length > 20) io.out(`  ... and ${skipped.length - 20} more (all of them with --json)`);
    }
  }
  return EXIT_OK;
}

/**
 * The shared front of `cancel` and `retry`: an instance id or a filter, never both, never neither.
 * With a filter, applies `act` to what it selects and resolves to the exit code; with an id,
 * returns undefined for the command to handle it.
 */
export function runOnFilter(
  command: Command,
  values: Record<string, unknown>,
  io: Io,
  id: string | undefined,
  spec: { statuses: readonly Status[]; defaults: readonly Status[]; verb: string; past: string; hint: string },
  act: (engine: GenDurable, id: string) => Promise<void>,
): Promise<number> | undefined {
  const filter = filterFrom(values, command, spec.statuses, spec.defaults);
  if (filter && id !== undefined) throw new UsageError("pass an instance id or a filter, not both", command);
  if (!filter && id === undefined) throw new UsageError(`pass an instance id, or a filter (${spec.hint})`, command);
  if (!filter) return undefined;
  const { verb, past } = spec;
  return withClient(command, values, io, ({ engine, pool, schema, json }) =>
    applyToFilter(io, pool, schema, filter, { verb, past, dryRun: values["dry-run"] === true, json }, (id) =>
      act(engine, id),
    ),
  );
}
