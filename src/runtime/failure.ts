/**
 * What a failed attempt records, and when it runs again: one judgement shared by
 * the executor and the testing helpers, so both say the same thing about the
 * same throw.
 */
import { DEFAULT_BACKOFF, resolveBackoff, retryDelay, type BackoffFn } from "../backoff.js";
import { toErrorRecord, type ErrorRecord } from "../json.js";

const defaultBackoff = resolveBackoff(DEFAULT_BACKOFF, "default backoff");

export interface AttemptFailure {
  /** The stored error: bounded, storable, and never empty. */
  error: ErrorRecord;
  willRetry: boolean;
  /** Milliseconds until the retry (0 when it will not retry). */
  delayMs: number;
}

export function attemptFailure(thrown: unknown, step: string, attempt: number, maxAttempts: number, backoff: BackoffFn | undefined): AttemptFailure {
  // `throw undefined` and `Promise.reject()` carry nothing: say so, naming the step.
  const error = toErrorRecord(thrown === undefined || thrown === null ? new Error(`step "${step}" threw ${String(thrown)} instead of an Error`) : thrown);
  const willRetry = attempt < maxAttempts;
  if (!willRetry) return { error, willRetry, delayMs: 0 };
  const { delayMs, problem } = retryDelay(backoff ?? defaultBackoff, attempt);
  if (problem) error.message = `${error.message} (${problem})`;
  return { error, willRetry, delayMs };
}
