/**
 * Durations are milliseconds (a finite number >= 0) or strings such as "250ms",
 * "30s", "5m", "2h", "1d". Typed as string so values read from configuration
 * fit; every duration is checked at run time with an error naming the option.
 */
export type Duration = number | string;

const UNIT_MS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses a duration, or returns an error message naming `what` when it is not one. */
export function parseDuration(value: unknown, what: string): number | string {
  if (typeof value === "number") {
    if (Number.isFinite(value) && value >= 0) return value;
    return `${what} must be a duration (milliseconds >= 0 or a string like "30s"), got ${value}`;
  }
  if (typeof value === "string") {
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(value);
    if (m) return Number(m[1]) * UNIT_MS[m[2] ?? "ms"]!;
  }
  return `${what} must be a duration (milliseconds >= 0 or a string like "30s", "5m", "2h"), got ${describe(value)}`;
}

/** Like `parseDuration` but throws `make(message)` on a bad value. */
export function toMs(value: unknown, what: string, make: (message: string) => Error): number {
  const parsed = parseDuration(value, what);
  if (typeof parsed === "string") throw make(parsed);
  return parsed;
}

export function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value.length > 80 ? value.slice(0, 80) + "…" : value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value === "function") return "a function";
  if (typeof value === "symbol") return value.toString();
  if (value === null || typeof value !== "object") return String(value);
  if (Array.isArray(value)) return "an array";
  const proto = Object.getPrototypeOf(value) as { constructor?: { name?: string } } | null;
  const name = proto?.constructor?.name;
  return name && name !== "Object" ? `a ${name}` : "an object";
}
