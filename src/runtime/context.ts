/** Builds the `ctx` a step receives: instance facts plus the outcome helpers. */
import type pg from "pg";
import type {
  AnyMachine,
  ChildOutcome,
  ReceivedSignal,
  StepCancellation,
  StepContext,
  StepFailure,
  StepLogger,
} from "../define.js";
import type { Duration } from "../duration.js";
import { ConfigError } from "../errors.js";
import { checkPublish } from "./published.js";
import { captureTraceContext } from "../telemetry/propagation.js";
import { makeOutcome, type AwaitOptions, type AwaitSpec, type ScheduleOptions, type SpawnOptions } from "../outcome.js";

export interface ContextInput {
  id: string;
  machine: string;
  step: string;
  state: unknown;
  attempt: number;
  maxAttempts: number;
  resumedBy: "signal" | "timeout" | undefined;
  failure: StepFailure | undefined;
  cancellation: StepCancellation | undefined;
  /** The engine's clock (ctx.now()). */
  now: () => Date;
  awaited: readonly ReceivedSignal[];
  children: readonly ChildOutcome[];
  correlationKey: string | null;
  insertedAt: Date;
  abortSignal: AbortSignal;
  log: StepLogger;
  client: pg.ClientBase | undefined;
  /** Where ctx.publish records values; the judge takes them from there. */
  published?: Map<string, unknown>;
}

export function createContext(input: ContextInput): StepContext<unknown, unknown, string> {
  const { client, published = new Map<string, unknown>(), ...facts } = input;
  return Object.freeze({
    ...facts,
    get client(): pg.ClientBase {
      if (!client) {
        throw new ConfigError(
          "ctx.client is only available in transactional steps: " +
            `declare step "${input.step}" of machine "${input.machine}" as { run, transactional: true }`,
        );
      }
      return client;
    },
    next: (step: string, ...rest: [unknown?, ScheduleOptions?]) =>
      makeOutcome({
        kind: "next",
        step,
        state: rest[0],
        hasState: rest.length > 0 && rest[0] !== undefined,
        options: rest[1] ?? {},
      }),
    await: (spec: AwaitSpec, step: string, ...rest: [unknown?, AwaitOptions?]) =>
      makeOutcome({
        kind: "await",
        spec,
        step,
        state: rest[0],
        hasState: rest.length > 0 && rest[0] !== undefined,
        options: rest[1] ?? {},
      }),
    // Typed by the caller's machine: a child's result was checked by that machine's `result` schema.
    childrenOf: <M extends AnyMachine>(machine: M) =>
      input.children.filter((child) => child.machine === machine?.name) as unknown as ChildOutcome<M>[],
    spawn: (children: readonly unknown[], step: string, ...rest: [unknown?, SpawnOptions?]) =>
      makeOutcome({
        kind: "spawn",
        children: [...children],
        step,
        state: rest[0],
        hasState: rest.length > 0 && rest[0] !== undefined,
        ...(rest[1] === undefined ? {} : { options: rest[1] }),
        // Called in the step's code, where its span is active: the children's steps link to it.
        traceContext: captureTraceContext(),
      }),
    publish: (key: string, value: unknown) => {
      published.set(checkPublish(key, value, `step "${input.step}" of machine "${input.machine}"`), value);
    },
    done: (result?: unknown) => makeOutcome({ kind: "done", result }),
    snooze: (delay: Duration) => makeOutcome({ kind: "snooze", delay }),
    cancel: (reason?: string) => makeOutcome({ kind: "cancel", reason }),
  });
}
