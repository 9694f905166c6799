/**
 * Durations are milliseconds (a finite number >= 0) or strings such as "250ms",
 * "30s", "5m", "2h", "1d". Typed as string so values read from configuration
 * fit; every duration is checked at run time with an error naming the option.
 *
 * Every duration is at most 100 years (MAX_DURATION_MS): durations become
 * Postgres intervals and timestamps (now() + delay), whose range a larger one
 * overflows, and timers (see src/timers.ts).
 */
export type Duration = number | string;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** The longest duration: 100 years of 365 days, far beyond any real need, well inside Postgres' range. */
export const MAX_DURATION_MS = 100 * 365 * 86_400_000;

/** Parses a duration, or returns an error message naming `what` when it is not one. */
export function parseDuration(value: unknown, what: string): number | string {
  let ms: number | undefined;
  if (typeof value === "number") {
    if (!Number.isFinite(value) || value < 0)
      return `${what} must be a duration (milliseconds >= 0 or a string like "30s"), got ${value}`;
    ms = value;
  } else if (typeof value === "string") {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value);
    if (m) ms = Number(m[1]) * UNIT_MS[m[2] ?? "ms"]!;
  }
  if (ms === undefined)
    return `${what} must be a duration (milliseconds >= 0 or a string like "30s", "5m", "2h"), got ${describe(value)}`;
  if (!(ms <= MAX_DURATION_MS)) return `${what} must be at most 100 years (${MAX_DURATION_MS} ms), got ${ms} ms`;
  return ms;
}

/** Like `parseDuration` but throws `make(message)` on a bad value. */
export function toMs(value: unknown, what: string, make: (message: string) => Error): number {
  const parsed = parseDuration(value, what);
  if (typeof parsed === "string") throw make(parsed);
  return parsed;
}

/**
 * The earliest and latest instants a run time may name: years 1 to 9999 (what ISO 8601 text, and so Postgres, reads
 * back).
 */
const MIN_RUN_AT_MS = Date.parse("0001-01-01T00:00:00.000Z");
const MAX_RUN_AT_MS = Date.parse("9999-12-31T23:59:59.999Z");

/**
 * Checks a run time (`runAt`) and returns its ISO 8601 text for Postgres, or
 * throws `make(message)` naming `what`: it must be a valid Date from year 1 to
 * year 9999 (UTC). Later or earlier Dates exist in JavaScript, but their text
 * (+010000-01-01..., -000001-...) is not a timestamp Postgres reads.
 */
export function checkRunAt(value: unknown, what: string, make: (message: string) => Error): string {
  const ms = value instanceof Date ? value.getTime() : Number.NaN;
  if (!(ms >= MIN_RUN_AT_MS && ms <= MAX_RUN_AT_MS)) {
    const got = value instanceof Date ? (Number.isNaN(ms) ? "Invalid Date" : value.toISOString()) : describe(value);
    throw make(`${what} must be a valid Date from 0001-01-01 to 9999-12-31 (UTC), got ${got}`);
  }
  return (value as Date).toISOString();
}

export function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.length > 80 ? value.slice(0, 80) + "…" : value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "function") return "a function";
  if (typeof value === "symbol") return value.toString();
  if (value === null || typeof value !== "object") return String(value);
  try {
    if (Array.isArray(value)) return "an array";
    const proto = Object.getPrototypeOf(value) as { constructor?: { name?: string } } | null;
    const name = proto?.constructor?.name;
    return typeof name === "string" && name !== "" && name !== "Object" ? `a ${name}` : "an object";
  } catch {
    // A revoked Proxy, or one whose traps throw: describing it must not throw.
    return "an object that cannot be read";
  }
}
