/** Retry delays after a failed attempt. */
import { describe, type Duration, parseDuration } from "./duration.js";
import { ConfigError } from "./errors.js";
import { rejectUnknownKeys } from "./suggest.js";

/**
 * How long a failed step waits before its next attempt: exponential (the default: base 1 s, max 1 h, with
 * jitter), fixed, or a function of the attempt that failed (1-based) returning the delay. A function that
 * throws falls back to the default backoff, and the attempt's error says so.
 */
export type Backoff =
  | {
      /** Doubles after each failed attempt: `base`, 2 × `base`, 4 × `base`, … up to `max`. */
      type: "exponential";
      /** The delay after the first failed attempt. Default "1s". */
      base?: Duration;
      /** The longest delay. Default "1h". */
      max?: Duration;
      /** Wait between half and all of each delay, at random, so retries of many instances spread out. Default true. */
      jitter?: boolean;
    }
  | {
      /** The same delay after every failed attempt. */
      type: "fixed";
      /** The delay. */
      delay: Duration;
      /** Wait between half and all of the delay, at random. Default false. */
      jitter?: boolean;
    }
  | ((attempt: number) => Duration);

/** A resolved backoff: milliseconds to wait before attempt `attempt + 1`, given that `attempt` (1-based) failed. */
export type BackoffFn = (attempt: number) => number;

export const DEFAULT_BACKOFF = { type: "exponential", base: "1s", max: "1h", jitter: true } as const;

/** The retry delay after `attempt` failed; the default backoff's when `backoff` throws, with the reason. */
export function retryDelay(backoff: BackoffFn, attempt: number): { delayMs: number; problem?: string } {
  try {
    return { delayMs: backoff(attempt) };
  } catch (error) {
    const problem = error instanceof Error ? error.message : String(error);
    return {
      delayMs: defaultBackoff(attempt),
      problem: `the backoff function failed (${problem.slice(0, 500)}); the default backoff was used`,
    };
  }
}

const defaultBackoff = exponential(1000, 3_600_000, true);

export function resolveBackoff(option: Backoff | undefined, where: string): BackoffFn {
  const spec = option ?? DEFAULT_BACKOFF;
  const fail = (message: string) => new ConfigError(`${where}: ${message}`);
  if (typeof spec === "function") {
    // Throws when the user's function throws or returns something that is not a duration:
    // the executor then retries after the default backoff and records why.
    return (attempt) => {
      const ms = parseDuration(spec(attempt), `${where}(${attempt})`);
      if (typeof ms === "string") throw new ConfigError(ms);
      return ms;
    };
  }
  if (typeof spec !== "object" || spec === null)
    throw fail(`backoff must be { type: "exponential" | "fixed", ... } or a function`);
  if (spec.type === "exponential") {
    rejectUnknownKeys(spec, ["type", "base", "max", "jitter"], `${where} (exponential)`, (m) => new ConfigError(m));
    const base = duration(spec.base ?? "1s", `${where}.base`);
    const max = duration(spec.max ?? "1h", `${where}.max`);
    return exponential(base, max, spec.jitter ?? true);
  }
  if (spec.type === "fixed") {
    rejectUnknownKeys(spec, ["type", "delay", "jitter"], `${where} (fixed)`, (m) => new ConfigError(m));
    const delay = duration(spec.delay, `${where}.delay`);
    const jitter = spec.jitter ?? false;
    return () => (jitter ? delay * (0.5 + Math.random() / 2) : delay);
  }
  throw fail(`backoff.type must be "exponential" or "fixed", got ${describe((spec as { type?: unknown }).type)}`);
}

function duration(value: unknown, what: string): number {
  const ms = parseDuration(value, what);
  if (typeof ms === "string") throw new ConfigError(ms);
  return ms;
}

function exponential(baseMs: number, maxMs: number, jitter: boolean): BackoffFn {
  return (attempt) => {
    const raw = Math.min(maxMs, baseMs * 2 ** Math.min(attempt - 1, 40));
    // "Equal jitter": between half and all of the delay, so retries of a burst spread out
    // but never fire sooner than half the nominal delay.
    return jitter ? raw / 2 + Math.random() * (raw / 2) : raw;
  };
}
