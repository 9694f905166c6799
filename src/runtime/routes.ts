/**
 * Failure and cancel routing of one attempt (pure, like the judge that calls it): whether a thrown
 * error skips the retries, the row update that routes an instance to its onFailure step, the one
 * that ends a cancel's cleanup, and the ctx facts both routes give the step they run.
 */
import type { AnyMachine } from "../define.js";
import { NonRetryableError } from "../errors.js";
import type { ErrorRecord } from "../json.js";
import type { Attempt } from "./attempt.js";
import { SYSTEM_CLOCK } from "./clock.js";
import type { Completion } from "./completion.js";

/** The ctx facts an attempt carries beyond the row's plain columns. */
export function routeFacts({ row, maxAttempts, clock }: Attempt) {
  const engineClock = clock ?? SYSTEM_CLOCK;
  return {
    maxAttempts,
    resumedBy: row.resumed_by ?? undefined,
    failure: row.failure ?? undefined,
    cancellation: row.cancel_requested ? { reason: row.cancel_requested.message } : undefined,
    now: () => engineClock.now(),
  };
}

/** A NonRetryableError, or an instance of a class the step (or its machine) lists in retry.nonRetryable. */
export function isNonRetryable({ step }: Attempt, thrown: unknown): boolean {
  if (thrown instanceof NonRetryableError) return true;
  return (step?.nonRetryable ?? []).some((errorClass) => thrown instanceof errorClass);
}

/**
 * After the last attempt: the instance runs its onFailure step instead of ending failed, unless it
 * was routed once already (ctx.failure is set: a failure after routing ends it failed), the failing
 * step is that step itself, or it is cleaning up after a cancel.
 */
export function routeFailure(attempt: Attempt, error: ErrorRecord, base: Completion): Completion | undefined {
  const { row, step } = attempt;
  const target = step?.onFailure;
  if (target === undefined || target === row.step || row.failure || row.cancel_requested) return undefined;
  return {
    ...base,
    status: "runnable",
    step: target,
    attempt_op: "reset",
    error,
    hist_error: error,
    to_step: target,
    outcome: "on_failure",
    failure: { error, step: row.step, attempts: row.attempt },
  };
}

/**
 * The end of a cancel's cleanup (the onCancel step returned, or failed its last attempt): the
 * instance ends cancelled, with the cancel's reason as its error, whatever the step returned.
 */
export function endCancelled(attempt: Attempt, base: Completion, stepError: ErrorRecord | null): Completion {
  const error = attempt.row.cancel_requested!;
  return { ...base, status: "cancelled", error, hist_error: stepError ?? error, outcome: "cancelled" };
}

/**
 * The onCancel steps of the machines an engine knows, as engine.cancel passes them to its statements
 * ({ machine: step }, JSON): their instances run that step before they end cancelled.
 */
export function onCancelSteps(machines: ReadonlyMap<string, AnyMachine>): string {
  const steps: Record<string, string> = {};
  for (const machine of machines.values()) if (machine.onCancel !== undefined) steps[machine.name] = machine.onCancel;
  return JSON.stringify(steps);
}
