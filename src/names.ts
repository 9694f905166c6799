/**
 * Names stored in rows (machines, queues, events, keys), instance ids, and the one SQL identifier we build (the
 * schema).
 */
import { describe } from "./duration.js";

/**
 * A UTF-16 surrogate without its pair. Postgres has no way to store one: pg
 * encodes it as U+FFFD (two different keys would silently become one) and a
 * jsonb parameter refuses its \u escape.
 */
export const LONE_SURROGATE = /[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

/**
 * Machine, queue, step, event and rate-limit names and node ids: printable, 1–200
 * characters, no control characters (NUL among them), no lone surrogates, no
 * surrounding spaces. Stored only as bound parameters.
 */
export function checkName(value: unknown, what: string, make: (message: string) => Error): string {
  if (
    typeof value !== "string" ||
    value.length === 0 ||
    value.length > 200 ||
    value.trim() !== value ||
    /[\u0000-\u001f]/.test(value) ||
    LONE_SURROGATE.test(value)
  ) {
    throw make(
      `${what} must be a non-empty string of at most 200 characters without control characters, ` +
        `lone UTF-16 surrogates or surrounding spaces, got ${describe(value)}`,
    );
  }
  return value;
}

/**
 * Correlation, concurrency and dedup keys and rate-limit partitions: any non-empty string up to 1,000 characters
 * without NUL or lone surrogates.
 */
export function checkKey(value: unknown, what: string, make: (message: string) => Error): string {
  if (
    typeof value !== "string" ||
    value.length === 0 ||
    value.length > 1000 ||
    value.includes("\u0000") ||
    LONE_SURROGATE.test(value)
  ) {
    throw make(
      `${what} must be a non-empty string of at most 1000 characters without NUL or lone UTF-16 surrogates, ` +
        `got ${describe(value)}`,
    );
  }
  return value;
}

/** The largest instance id (Postgres bigint). */
export const MAX_ID = "9223372036854775807";

/**
 * Instance ids: the decimal text of a positive bigint, 1 to 9223372036854775807,
 * without sign, spaces or leading zeros. The one check of every id a caller
 * passes (get, explain, history, wait, cancel, retry, signal, list's after).
 */
export function checkId(value: unknown, what: string, make: (message: string) => Error): string {
  if (
    typeof value !== "string" ||
    !/^[1-9][0-9]{0,18}$/.test(value) ||
    (value.length === MAX_ID.length && value > MAX_ID)
  ) {
    throw make(`${what} must be an instance id: a positive integer string up to ${MAX_ID}, got ${describe(value)}`);
  }
  return value;
}

const SCHEMA_NAME = /^[a-z_][a-z0-9_]{0,40}$/;

/** The schema name is the only identifier that enters SQL text; it must match ^[a-z_][a-z0-9_]{0,40}$. */
export function checkSchemaName(value: unknown, make: (message: string) => Error): string {
  if (typeof value !== "string" || !SCHEMA_NAME.test(value) || value.startsWith("pg_")) {
    throw make(`schema must match ^[a-z_][a-z0-9_]{0,40}$ and not start with pg_, got ${describe(value)}`);
  }
  return value;
}

/** Quotes a checked schema name for SQL text. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
