/**
 * What the operator commands (status, list, show, signal, cancel, retry) share:
 * connect, check the schema is migrated, run the command against a pure-client
 * GenDurable (no queues, so no loops), and turn every expected failure into one
 * line on stderr and an exit code a script can trust:
 *   0 ok; 1 the work failed (database unreachable, schema not migrated, unknown
 *   instance, terminated instance...); 2 the command line was wrong.
 */
import type pg from "pg";
import { GenDurable } from "../engine.js";
import { GenDurableError, ValidationError } from "../errors.js";
import { currentVersion, LATEST_MIGRATION } from "../migrate.js";
import { checkId, MAX_ID } from "../names.js";
import { EXIT_FAILURE, UsageError, type Command, type Io } from "./cli.js";
import {
  DATABASE_URL_OPTION,
  databaseUrlFrom,
  describeDbError,
  openCliPool,
  redact,
  SCHEMA_OPTION,
  schemaFrom,
  urlProblem,
} from "./db.js";

export const JSON_OPTION = {
  type: "boolean",
  description: "print one JSON document on stdout (for scripts) instead of text",
} as const;

/** --schema, --database-url and --json: every operator command takes them. */
export const CLIENT_OPTIONS = {
  schema: SCHEMA_OPTION,
  "database-url": DATABASE_URL_OPTION,
  json: JSON_OPTION,
} as const;

export interface Client {
  engine: GenDurable;
  /** The CLI's own one-connection pool, for the few queries GenDurable does not offer (status). */
  pool: pg.Pool;
  schema: string;
  json: boolean;
}

/** A failure already explained to the user: its message goes to stderr, exit code 1. */
export class CommandFailure extends Error {}

/**
 * Connects, checks the schema, runs `body`, and maps its failures to exit codes.
 * Usage errors (exit 2) raised before connecting cost no connection.
 */
export async function withClient(
  command: Command,
  values: Record<string, unknown>,
  io: Io,
  body: (client: Client) => Promise<number>,
): Promise<number> {
  const schema = schemaFrom(values, command);
  const url = databaseUrlFrom(values, io, command);
  const fail = (message: string) => {
    io.err(`gen-durable ${command.name}: ${withoutPrefix(message, command.name)}`);
    return EXIT_FAILURE;
  };
  const problem = urlProblem(url);
  if (problem) return fail(problem);
  const pool = openCliPool(url);
  let engine: GenDurable | undefined;
  try {
    let version: number;
    try {
      version = await currentVersion(pool, schema);
    } catch (error) {
      // Connected, but the server refused the query (say, no USAGE on the schema): not a connection problem.
      const code = (error as { code?: unknown }).code;
      if (typeof code === "string" && /^[0-9A-Z]{5}$/.test(code) && !/^(08|28|3D|57)/.test(code)) {
        return fail(`cannot read schema ${schema} at ${redact(url)}: ${describeDbError(error)}`);
      }
      return fail(`cannot connect to ${redact(url)}: ${describeConnectError(error)}`);
    }
    const migrate = `gen-durable migrate${schema === "gen_durable" ? "" : ` --schema ${schema}`}`;
    if (version === 0) return fail(`schema ${schema} is not migrated: run ${migrate}`);
    if (version < LATEST_MIGRATION) {
      return fail(
        `schema ${schema} is at migration ${version} but this gen-durable needs ${LATEST_MIGRATION}: run ${migrate}`,
      );
    }
    engine = new GenDurable({ pool, schema });
    return await body({ engine, pool, schema, json: values.json === true });
  } catch (error) {
    if (error instanceof UsageError) throw error;
    // Input the engine rejected (an event name, a payload too large): the command line was wrong.
    if (error instanceof ValidationError) {
      // "pauseQueue: queue must be ..." names an engine method the operator never called: name the command.
      const stripped = withoutPrefix(error.message, command.name);
      throw new UsageError(stripped === error.message ? stripped : `${command.name}: ${stripped}`, command);
    }
    if (error instanceof CommandFailure || error instanceof GenDurableError) return fail(error.message);
    if (isDatabaseError(error)) return fail(`database error: ${describeDbError(error)}`);
    throw error;
  } finally {
    await engine?.stop().catch(() => {});
    await pool.end().catch(() => {});
  }
}

/** pg's message plus what it most likely means, for the first contact with the server. */
export function describeConnectError(error: unknown): string {
  const message = describeDbError(error);
  const code = (error as { code?: unknown } | null)?.code;
  if (code === "ECONNREFUSED")
    return `${message} (nothing is listening there: is Postgres running, and are host and port right?)`;
  if (code === "ENOTFOUND" || code === "EAI_AGAIN") return `${message} (the host name does not resolve)`;
  if (code === "ETIMEDOUT" || /timeout/i.test(message))
    return `${message} (no answer from the server in time: host unreachable or firewalled?)`;
  if (code === "28P01" || code === "28000")
    return `authentication failed: ${message} (check the user and password in the URL)`;
  if (code === "3D000") return `${message} (check the database name in the URL)`;
  return message;
}

function isDatabaseError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  // pg's server errors carry a 5-character SQLSTATE; network errors a Node.js code such as ECONNRESET.
  return typeof code === "string" || /Connection terminated|connection is closed|timeout/i.test(error.message);
}

const ID = /^[1-9][0-9]{0,18}$/;

/** An instance is addressed by id or by correlation key. */
export type Target = { id: string } | { correlationKey: string };

/**
 * `<id | key>`: a number is an id, anything else a correlation key; --id or
 * --key force the reading (a key may look like a number).
 */
export function targetFrom(text: string, values: Record<string, unknown>, command: Command): Target {
  if (values.id && values.key) throw new UsageError("--id and --key contradict each other: pass one", command);
  if (values.key) {
    if (text.length === 0) throw new UsageError("the correlation key is empty", command);
    return { correlationKey: text };
  }
  if (values.id || ID.test(text)) return { id: idFrom(text, command) };
  if (text.length === 0) throw new UsageError("the instance id or correlation key is empty", command);
  return { correlationKey: text };
}

/** An instance id: a positive integer within bigint's range (a larger one is bad input, not a database error). */
export function idFrom(text: string, command: Command, what = "instance id"): string {
  if (!ID.test(text)) throw new UsageError(`${what} must be a positive integer, got ${JSON.stringify(text)}`, command);
  return checkId(text, what, () => new UsageError(`${what} must be at most ${MAX_ID}, got ${text}`, command));
}

export function describeTarget(target: Target): string {
  return "id" in target ? target.id : `with correlation key ${JSON.stringify(target.correlationKey)}`;
}

/** For an unknown numeric id: maybe the user meant a key that looks like a number. */
export function unknownHint(target: Target): string {
  return "id" in target ? ` (to address the correlation key "${target.id}", pass --key)` : "";
}

/** Prints `value` as the command's one JSON document. */
export function printJson(io: Io, value: unknown): void {
  io.out(JSON.stringify(value, null, 2));
}

/** The engine's methods whose names start their error messages ("retry: instance 3 is done"). */
const ENGINE_PREFIXES = [
  "insert",
  "insertMany",
  "signal",
  "cancel",
  "retry",
  "get",
  "pauseQueue",
  "resumeQueue",
  "prune",
];

/**
 * An engine error's message without the method name it starts with: the CLI prints its own
 * prefix (`gen-durable retry: ...`), and `gen-durable retry: retry: ...` reads as a stutter.
 */
export function withoutPrefix(message: string, command: string): string {
  const match = /^([A-Za-z]+)(\[\d+\])?: /.exec(message);
  if (!match || (match[1] !== command && !ENGINE_PREFIXES.includes(match[1]!))) return message;
  return message.slice(match[0].length);
}
