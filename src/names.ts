/** Names stored in rows (machines, queues, events, keys) and the one SQL identifier we build (the schema). */

/** Machine, queue and event names: printable, 1–200 characters, no NUL. Stored only as bound parameters. */
export function checkName(value: unknown, what: string, make: (message: string) => Error): string {
  if (typeof value !== "string" || value.length === 0 || value.length > 200 || value.trim() !== value || /[\u0000-\u001f]/.test(value)) {
    throw make(`${what} must be a non-empty string of at most 200 characters without control characters or surrounding spaces, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Correlation and concurrency keys: any non-empty string up to 1,000 characters without NUL. */
export function checkKey(value: unknown, what: string, make: (message: string) => Error): string {
  if (typeof value !== "string" || value.length === 0 || value.length > 1000 || value.includes("\u0000")) {
    throw make(`${what} must be a non-empty string of at most 1000 characters without NUL, got ${typeof value === "string" ? JSON.stringify(value.slice(0, 100)) : String(value)}`);
  }
  return value;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,40}$/;

/** The schema name is the only identifier that enters SQL text; it must match ^[a-z_][a-z0-9_]{0,40}$. */
export function checkSchemaName(value: unknown, make: (message: string) => Error): string {
  if (typeof value !== "string" || !SCHEMA_NAME.test(value) || value.startsWith("pg_")) {
    throw make(`schema must match ^[a-z_][a-z0-9_]{0,40}$ and not start with pg_, got ${JSON.stringify(value)}`);
  }
  return value;
}

/** Quotes a checked schema name for SQL text. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
