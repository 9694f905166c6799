/** What the database commands share: which URL, a pool that gives up in time, and readable pg errors. */
import pg from "pg";
import { checkSchemaName } from "../names.js";
import { DEFAULT_SCHEMA } from "../migrate.js";
import { UsageError, type Command, type Io } from "./cli.js";

export const SCHEMA_OPTION = {
  type: "string",
  valueName: "name",
  description: `schema holding gen-durable's tables (default ${DEFAULT_SCHEMA})`,
} as const;

export const DATABASE_URL_OPTION = {
  type: "string",
  valueName: "url",
  description: "Postgres connection URL (default: the DATABASE_URL environment variable)",
} as const;

export function schemaFrom(values: Record<string, unknown>, command: Command): string {
  const schema = values.schema ?? DEFAULT_SCHEMA;
  return checkSchemaName(schema, (m) => new UsageError(`invalid --schema: ${m}`, command));
}

/** --database-url, else DATABASE_URL; a usage error when neither is set. */
export function databaseUrlFrom(values: Record<string, unknown>, io: Io, command: Command): string {
  const url = typeof values["database-url"] === "string" ? values["database-url"] : io.env.DATABASE_URL;
  if (url === undefined || url.trim() === "") {
    throw new UsageError("no database: set DATABASE_URL or pass --database-url postgres://user:password@host:5432/db", command);
  }
  return url;
}

/** The URL without its password, for messages. */
export function redact(url: string): string {
  try {
    const parsed = new URL(url);
    if (parsed.password) parsed.password = "***";
    return parsed.toString();
  } catch {
    return JSON.stringify(url);
  }
}

/** A connection-string problem pg would report confusingly (e.g. "not a url" becomes a lookup of host "base"). */
export function urlProblem(url: string): string | undefined {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `${redact(url)} is not a URL; expected postgres://user:password@host:5432/database`;
  }
  if (!["postgres:", "postgresql:", "socket:"].includes(parsed.protocol)) {
    return `${redact(url)} is not a Postgres URL (it starts with ${parsed.protocol}); expected postgres://user:password@host:5432/database`;
  }
  return undefined;
}

export function openCliPool(url: string): pg.Pool {
  const pool = new pg.Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 15_000, application_name: "gen-durable-cli" });
  pool.on("error", () => {});
  return pool;
}

/** One line (plus pg's detail and hint) for an error from pg or the network: no stack. */
export function describeDbError(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const parts: string[] = [];
  const inner = error instanceof AggregateError ? error.errors.filter((e): e is Error => e instanceof Error) : [];
  parts.push(error.message || inner.map((e) => e.message).join("; ") || error.name);
  const { detail, hint } = error as { detail?: string; hint?: string };
  if (detail) parts.push(`detail: ${detail}`);
  if (hint) parts.push(`hint: ${hint}`);
  return parts.join("\n  ");
}
