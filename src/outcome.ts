/**
 * Outcomes: what a step returns. They are plain tagged objects made by the ctx
 * helpers; the brand lets the executor tell a real outcome from an accidental
 * return value (a step that returns `undefined` or `{ next: "x" }` fails with an
 * error naming what it returned).
 */
import type { Duration } from "./duration.js";
import type { TraceCarrier } from "./telemetry/propagation.js";

const BRAND: unique symbol = Symbol.for("gen-durable.outcome");

/**
 * What `ctx.await` waits for: a signal's name, a pack of `count` signals of one name, every member of `all`, or
 * the first member of `any` to complete; members nest (`{ any: [{ event: "approve", count: 2 }, "reject"] }`).
 */
export type AwaitSpec<E extends string = string> =
  | E
  | {
      /** Every one of these. */
      all: readonly AwaitSpec<E>[];
    }
  | {
      /** The first of these to be complete; `ctx.awaited` holds what it needed. */
      any: readonly AwaitSpec<E>[];
    }
  | {
      /** The signal's name. */
      event: E;
      /** How many signals of that name (at least 1). */
      count: number;
    };

export interface ScheduleOptions {
  delay?: Duration;
  runAt?: Date;
  priority?: number;
}

/** When a spawn's join step runs: every child terminal (default), the first done, n done, or the first failure. */
export type JoinCondition =
  | "all"
  | "first"
  | {
      /** Resume once this many children are done. */
      quorum: number;
    }
  | {
      /** Resume at the first child that ends failed or cancelled; else once every child is terminal. */
      failFast: true;
    };

/** Options of `ctx.spawn`: when the join step runs, and what happens to the children still live then. */
export interface SpawnOptions {
  /** Default "all". `"first"` and `{ quorum: n }` also resume once no more children can be done than have. */
  join?: JoinCondition;
  /** Children still live when the join resumes early: cancelled before the join step runs (default), or kept. */
  remaining?: "cancel" | "keep";
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
  | {
      kind: "spawn";
      children: unknown[];
      step: string;
      state: unknown;
      hasState: boolean;
      options?: SpawnOptions;
      /** The trace context of the step that spawned (its span): the children's steps link to it. */
      traceContext?: TraceCarrier | null;
    }
  | { kind: "done"; result: unknown }
  | { kind: "snooze"; delay: Duration }
  | { kind: "cancel"; reason: string | undefined };

/** The opaque value a step returns; build it with `ctx.next`, `ctx.done`, ... */
export interface StepOutcome {
  /** What the step decided; read by the engine only. */
  readonly [BRAND]: OutcomeData;
}

export function makeOutcome(data: OutcomeData): StepOutcome {
  return Object.freeze({ [BRAND]: data });
}

export function outcomeData(value: unknown): OutcomeData | undefined {
  if (value === null || typeof value !== "object") return undefined;
  return (value as Partial<StepOutcome>)[BRAND];
}
