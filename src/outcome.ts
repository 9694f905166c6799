/**
 * Outcomes: what a step returns. They are plain tagged objects made by the ctx
 * helpers; the brand lets the executor tell a real outcome from an accidental
 * return value (a step that returns `undefined` or `{ next: "x" }` fails with an
 * error naming what it returned).
 */
import type { Duration } from "./duration.js";

const BRAND: unique symbol = Symbol.for("gen-durable.outcome");

export type AwaitSpec<E extends string = string> =
  E | { all: readonly E[] } | { any: readonly E[] } | { event: E; count: number };

export interface ScheduleOptions {
  delay?: Duration;
  runAt?: Date;
  priority?: number;
}

export interface AwaitOptions<K extends string = string> {
  /** Resume at `onTimeout` after this long. */
  timeout?: Duration;
  /**
   * Resume at `onTimeout` at this time on the engine's clock (a Date, or an ISO 8601 string): a
   * deadline kept in the state survives handling a signal and waiting again. Not with `timeout`.
   */
  until?: Date | string;
  onTimeout?: K;
}

export type OutcomeData =
  | { kind: "next"; step: string; state: unknown; hasState: boolean; options: ScheduleOptions }
  | { kind: "await"; spec: AwaitSpec; step: string; state: unknown; hasState: boolean; options: AwaitOptions }
  | { kind: "spawn"; children: unknown[]; step: string; state: unknown; hasState: boolean }
  | { kind: "done"; result: unknown }
  | { kind: "snooze"; delay: Duration }
  | { kind: "cancel"; reason: string | undefined };

/** The opaque value a step returns; build it with `ctx.next`, `ctx.done`, ... */
export interface StepOutcome {
  readonly [BRAND]: OutcomeData;
}

export function makeOutcome(data: OutcomeData): StepOutcome {
  return Object.freeze({ [BRAND]: data });
}

export function outcomeData(value: unknown): OutcomeData | undefined {
  if (value === null || typeof value !== "object") return undefined;
  return (value as Partial<StepOutcome>)[BRAND];
}
