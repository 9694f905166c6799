/**
 * One attempt of a step: the row this node claimed, the machine and step it
 * runs, how many attempts the step has, and when this one began. The executor
 * passes it whole from claim to commit; the judge reads it to turn what the
 * step returned or threw into a row update.
 */
import type { AnyMachine, ResolvedStep } from "../define.js";
import type { ClaimedRow } from "../sql/claims.js";
import { SYSTEM_CLOCK, type EngineClock } from "./clock.js";

/** A row as the claim query returns it (declared beside that query). */
export type { ClaimedRow };

export interface Attempt {
  row: ClaimedRow;
  machine: AnyMachine;
  /** Undefined when the row names a step its machine does not have: that attempt fails without running. */
  step: ResolvedStep | undefined;
  /** The attempts the step has in all: when `row.attempt` reaches it, a failure is terminal. */
  maxAttempts: number;
  /** performance.now() when the attempt began on this node: its duration is measured from here. */
  started: number;
  /** What the step's ctx.publish recorded: committed with its outcome (judge.ts), or not at all. */
  published?: Map<string, unknown>;
  /** The engine's clock: ctx.now(), and dates given as deadlines. */
  clock?: EngineClock;
}

/** An attempt whose step exists, so its code can run. */
export type RunnableAttempt = Attempt & { step: ResolvedStep };

export const DEFAULT_MAX_ATTEMPTS = 20;

/** The attempts a step has: the instance's own limit (set at insert), else the step's, the machine's, the default. */
export function attemptLimit(machine: AnyMachine, step: ResolvedStep | undefined, instance: number | null): number {
  return instance ?? step?.maxAttempts ?? machine.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
}

/** The attempt a claimed row starts, `started` being performance.now() at its start. */
export function attemptOf(
  row: ClaimedRow,
  machine: AnyMachine,
  started: number,
  clock: EngineClock = SYSTEM_CLOCK,
): Attempt {
  const step = machine.steps.get(row.step);
  return { row, machine, step, maxAttempts: attemptLimit(machine, step, row.max_attempts), started, clock };
}

export function isRunnable(attempt: Attempt): attempt is RunnableAttempt {
  return attempt.step !== undefined;
}
