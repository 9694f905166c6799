/** What the database commands share: which URL, a pool that gives up in time, and readable pg errors. */
import pg from "pg";
import { guardClients } from "../db/pool.js";
import { checkSchemaName } from "../names.js";
import { DEFAULT_SCHEMA } from "../migrate.js";
import { UsageError, type Command, type Io } from "./cli.js";
import { maskSecrets } from "./redact.js";

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
    throw new UsageError(
      "no database: set DATABASE_URL or pass --database-url postgres://user:password@host:5432/db",
      command,
    );
  }
  return url;
}

/**
 * The connection string without its passwords, for messages: the text as the
 * user wrote it, quoted when it is not a URL. See redact.ts for why the masking
 * never relies on a URL parser.
 */
export function redact(url: string): string {
  const masked = maskSecrets(url);
  return parses(url) && !/\s/.test(url) ? masked : JSON.stringify(masked);
}

function parses(url: string): boolean {
  try {
    new URL(url);
    return true;
  } catch {
    return false;
  }
}

const ENCODE_HINT =
  "percent-encode the special characters of the password: " +
  "@ as %40, / as %2F, ? as %3F, # as %23, : as %3A, a space as %20";
const EXPECTED = "expected postgres://user:password@host:5432/database";

/**
 * A connection-string problem, found before connecting: pg would report it
 * confusingly (e.g. "not a url" becomes a lookup of host "base") or, worse,
 * misread a password as the host, port or database name and have the server
 * echo it back in its error. Anything ambiguous is refused, with the fix.
 */
export function urlProblem(url: string): string | undefined {
  if (!/^[a-z][a-z0-9+.-]*:/i.test(url.trim()) && /^\s*[a-z_]+\s*=/i.test(url)) {
    return (
      `${redact(url)} looks like a key=value connection string; ` +
      "gen-durable takes a URL: postgres://user:password@host:5432/database"
    );
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return `${redact(url)} is not a URL; ${EXPECTED}${url.includes("@") ? `; ${ENCODE_HINT}` : ""}`;
  }
  if (!["postgres:", "postgresql:", "socket:"].includes(parsed.protocol)) {
    return `${redact(url)} is not a Postgres URL (it starts with ${parsed.protocol}); ${EXPECTED}`;
  }
  if (/\s/.test(url)) return `${redact(url)} contains white space, which a URL cannot hold: ${ENCODE_HINT}`;
  // An '@' after the host: either the password held '/', '?' or '#' (and the parser
  // cut it there), or a value holds a raw '@'. Both are misread; both are fixed by encoding.
  if (`${parsed.pathname}${parsed.search}${parsed.hash}`.includes("@")) {
    return `${redact(url)} has an @ after the host, so its parts cannot be told apart: ${ENCODE_HINT}`;
  }
  return undefined;
}

export function openCliPool(url: string): pg.Pool {
  const pool = new pg.Pool({
    connectionString: url,
    max: 1,
    connectionTimeoutMillis: 15_000,
    application_name: "gen-durable-cli",
  });
  pool.on("error", () => {});
  // From its first connection (the schema check runs before any engine sees the pool): behind a
  // pooler the engine's named statements must go unnamed on every connection (db/pooler.ts).
  guardClients(pool);
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
