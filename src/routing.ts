/**
 * Failure and cancel routing on a definition: which step runs after a step's last attempt fails
 * (onFailure), which one a cancel runs (onCancel), and which errors skip the retries (retry).
 */
import { describe } from "./duration.js";
import { ConfigError } from "./errors.js";
import { didYouMean, rejectUnknownKeys } from "./suggest.js";

/** An error class, as `instanceof` takes it. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type ErrorClass = abstract new (...args: any[]) => unknown;

/** Which errors fail a step at once. NonRetryableError always does. */
export interface RetryOptions {
  /** A thrown error that is an instance of one of these fails the step without retries. */
  nonRetryable?: readonly ErrorClass[];
}

export function checkRetry(value: unknown, where: string): RetryOptions | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null)
    throw new ConfigError(`${where} must be an object { nonRetryable?: [ErrorClass, ...] }, got ${describe(value)}`);
  rejectUnknownKeys(value, ["nonRetryable"], where, (m) => new ConfigError(m));
  const list = (value as RetryOptions).nonRetryable;
  if (list === undefined) return {};
  if (!Array.isArray(list) || list.some((c) => typeof c !== "function")) {
    throw new ConfigError(
      `${where}.nonRetryable must be an array of error classes (say [TypeError]), got ${describe(list)}`,
    );
  }
  return { nonRetryable: Object.freeze([...list]) };
}

/** A step name given to onFailure or onCancel: one of the machine's steps. */
export function checkRouteStep(value: unknown, steps: readonly string[], where: string): string | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "string" || !steps.includes(value)) {
    throw new ConfigError(
      `${where} names ${describe(value)}, which is not one of its steps (${steps.join(", ")})` +
        (typeof value === "string" ? didYouMean(value, steps) : ""),
    );
  }
  return value;
}
