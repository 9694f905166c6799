/**
 * Machine and job definitions. `defineMachine` checks a definition once, at
 * import time, and keeps the step names in the type so that `ctx.next("shp")`
 * is a compile error.
 */
import type pg from "pg";
import type { ErrorRecord } from "./json.js";
import { type Backoff, type BackoffFn, resolveBackoff } from "./backoff.js";
import { type Duration, describe, toMs } from "./duration.js";
import { ConfigError } from "./errors.js";
import type { AwaitOptions, AwaitSpec, ScheduleOptions, StepOutcome } from "./outcome.js";
import { isStandardSchema, type StandardSchemaV1 } from "./schema.js";
import { didYouMean, rejectUnknownKeys } from "./suggest.js";
import { checkName } from "./names.js";
import { checkRetry, checkRouteStep, type RetryOptions } from "./routing.js";

export type { AwaitSpec, StepOutcome } from "./outcome.js";
export type { RetryOptions } from "./routing.js";

/** Why the instance was routed to its onFailure step (`ctx.failure`). */
export interface StepFailure {
  /** The last attempt's error, as stored. */
  error: ErrorRecord;
  /** The step that failed. */
  step: string;
  /** The attempts it made. */
  attempts: number;
}

/** The cancel an onCancel step is cleaning up after (`ctx.cancellation`). */
export interface StepCancellation {
  /** The reason given to engine.cancel ("cancelled" when none was). */
  reason: string;
}

/** A signal consumed by an await, as seen in `ctx.awaited`. */
export interface ReceivedSignal {
  id: string;
  event: string;
  payload: unknown;
  insertedAt: Date;
}

/** A child's outcome, as seen in `ctx.children` on a join. */
export interface ChildOutcome {
  id: string;
  machine: string;
  status: string;
  result: unknown;
  error: unknown;
}

export interface StepLogger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
}

/** Insert options shared by `engine.insert` and `ctx.spawn` children. */
export interface InstanceOptions {
  queue?: string;
  priority?: number;
  delay?: Duration;
  runAt?: Date;
  maxAttempts?: number;
  /** Business key, unique among live instances; addresses signals. */
  correlationKey?: string;
  /** Steps of instances sharing this key never run at the same time, on any node. */
  concurrencyKey?: string;
}

/** A child for `ctx.spawn`: a machine with `state`, or a job with `args`. */
export type ChildSpec = InstanceOptions & { machine: AnyMachine } & ({ state: unknown } | { args: unknown } | object);

export interface StepContext<State, StateIn, K extends string> {
  readonly id: string;
  readonly machine: string;
  readonly step: K;
  readonly state: State;
  /** 1-based attempt number of this step. */
  readonly attempt: number;
  /** The attempts this step has in all: the last one is `ctx.attempt === ctx.maxAttempts`. */
  readonly maxAttempts: number;
  /** How the await that led to this step ended; undefined when this step was not reached from an await. */
  readonly resumedBy: "signal" | "timeout" | undefined;
  /** Set in the machine's onFailure step (and the steps after it): what failed. */
  readonly failure: StepFailure | undefined;
  /** Set in the machine's onCancel step: the cancel it cleans up after. */
  readonly cancellation: StepCancellation | undefined;
  readonly awaited: readonly ReceivedSignal[];
  readonly children: readonly ChildOutcome[];
  readonly correlationKey: string | null;
  readonly insertedAt: Date;
  /** Aborted on step timeout, cancel, lost lease and shutdown. */
  readonly abortSignal: AbortSignal;
  readonly log: StepLogger;
  /** The transaction that will commit this step's outcome. Only in steps declared `transactional: true`. */
  readonly client: pg.ClientBase;
  /**
   * The engine's clock: database time (as of the claim, plus the time since). In tests, advanceTime
   * moves it with the timers it fires, so code that computes remaining time can be tested.
   */
  now(): Date;

  /** Commit `state` (or keep it) and run `step`, now or after `delay` / at `runAt`. */
  next(step: K, state?: StateIn, options?: ScheduleOptions): StepOutcome;
  /** Commit `state`, park until `spec` is satisfied, then run `step` with the consumed signals in `ctx.awaited`. */
  await(spec: AwaitSpec, step: K, state?: StateIn, options?: AwaitOptions<K>): StepOutcome;
  /** Commit `state`, insert `children` atomically, and run `step` once all of them are terminal. */
  spawn(children: readonly ChildSpec[], step: K, state?: StateIn): StepOutcome;
  /** Finish: terminal `done`, `result` stored. */
  done(result?: unknown): StepOutcome;
  /** Run this step again after `delay`; not a failure, the attempt is not consumed. */
  snooze(delay: Duration): StepOutcome;
  /** Finish: terminal `cancelled`, no retry. */
  cancel(reason?: string): StepOutcome;
}

export type StepFn<State, StateIn, K extends string> = (
  ctx: StepContext<State, StateIn, K>,
) => StepOutcome | Promise<StepOutcome>;

export interface StepOptions<State, StateIn, K extends string> {
  run: StepFn<State, StateIn, K>;
  /** Abort `ctx.abortSignal` and fail the attempt after this long. */
  timeout?: Duration;
  maxAttempts?: number;
  backoff?: Backoff;
  /** Run inside the transaction that commits the outcome; `ctx.client` is that transaction. */
  transactional?: boolean;
  /** Draw from one of the engine's `rateLimits` before each run; a short bucket postpones the step. */
  rateLimit?: StepRateLimit<State, StateIn, K>;
  /** After this step's last attempt fails, run this step (with `ctx.failure`) instead of ending failed. */
  onFailure?: NoInfer<K>;
  /** Errors that fail this step at once, without retries (besides NonRetryableError). */
  retry?: RetryOptions;
}

/** A step's use of a rate limit declared on the engine (`rateLimits`). */
export interface StepRateLimit<State = unknown, StateIn = unknown, K extends string = string> {
  /** The name of the limit in the engine's `rateLimits`. */
  name: string;
  /** One bucket per partition value (say, per account). Default: one bucket for the limit. */
  partition?: (ctx: StepContext<State, StateIn, K>) => string | number;
  /** Tokens per run. Default 1. */
  weight?: number | ((ctx: StepContext<State, StateIn, K>) => number);
}

export type StepDefinition<State, StateIn, K extends string> =
  StepFn<State, StateIn, K> | StepOptions<State, StateIn, K>;

/** A step as the runtime sees it, whatever form it was declared in. */
export interface ResolvedStep {
  name: string;
  run: (ctx: StepContext<unknown, unknown, string>) => unknown;
  timeoutMs: number | undefined;
  maxAttempts: number | undefined;
  backoff: BackoffFn | undefined;
  transactional: boolean;
  rateLimit?: StepRateLimit;
  /** The step to route to after the last attempt fails (the step's own, else the machine's). */
  onFailure?: string;
  /** Error classes that fail the step at once (the step's own and the machine's). */
  nonRetryable?: RetryOptions["nonRetryable"];
}

declare const TYPES: unique symbol;

export interface Machine<
  Schema extends StandardSchemaV1 = StandardSchemaV1,
  K extends string = string,
  Kind extends "machine" | "job" = "machine" | "job",
> {
  readonly kind: Kind;
  readonly name: string;
  readonly queue: string;
  readonly schema: Schema;
  readonly initial: K;
  readonly steps: ReadonlyMap<string, ResolvedStep>;
  readonly maxAttempts: number | undefined;
  readonly backoff: BackoffFn | undefined;
  /** How long terminal instances are kept before the GC prunes them; undefined: the engine's `retention`. */
  readonly retentionMs?: number;
  /** The step a cancel runs before the instance ends cancelled. */
  readonly onCancel?: string;
  /** Type-level only. */
  readonly [TYPES]?: { steps: K };
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyMachine = Machine<any, any, "machine" | "job">;
export type Job<Schema extends StandardSchemaV1 = StandardSchemaV1> = Machine<Schema, "perform", "job">;

type In<S extends StandardSchemaV1> = StandardSchemaV1.InferInput<S>;
type Out<S extends StandardSchemaV1> = StandardSchemaV1.InferOutput<S>;

export interface MachineDefinition<Schema extends StandardSchemaV1, K extends string> {
  /** Stable name, stored in every row. */
  name: string;
  queue?: string;
  state: Schema;
  initial?: NoInfer<K>;
  steps: { [P in K]: StepDefinition<Out<Schema>, In<Schema>, K> };
  /** Default for the machine's steps (a step's own `maxAttempts` wins). Default 20. */
  maxAttempts?: number;
  backoff?: Backoff;
  /** Keep terminal instances this long before the GC prunes them. Default: the engine's `retention`. */
  retention?: Duration;
  /** For every step without its own: after the last attempt fails, run this step with `ctx.failure`. */
  onFailure?: NoInfer<K>;
  /** engine.cancel runs this step (with `ctx.cancellation`) before the instance ends cancelled. */
  onCancel?: NoInfer<K>;
  /** Errors that fail any step of the machine at once, without retries. */
  retry?: RetryOptions;
}

export const DEFAULT_QUEUE = "default";

export function defineMachine<Schema extends StandardSchemaV1, K extends string>(
  definition: MachineDefinition<Schema, K>,
): Machine<Schema, K, "machine"> {
  const where = `defineMachine(${typeof definition?.name === "string" ? JSON.stringify(definition.name) : "…"})`;
  if (typeof definition !== "object" || definition === null)
    throw new ConfigError("defineMachine needs a definition object");
  rejectUnknownKeys(
    definition,
    [
      "name",
      "queue",
      "state",
      "initial",
      "steps",
      "maxAttempts",
      "backoff",
      "retention",
      "onFailure",
      "onCancel",
      "retry",
    ],
    where,
    (m) => new ConfigError(m),
  );
  const common = resolveCommon(definition, where);
  if (typeof definition.steps !== "object" || definition.steps === null || Object.keys(definition.steps).length === 0) {
    throw new ConfigError(`${where}: steps must be an object with at least one step`);
  }
  const steps = new Map<string, ResolvedStep>();
  const machineRetry = checkRetry(definition.retry, `${where}: retry`);
  for (const [name, step] of Object.entries(definition.steps as Record<string, unknown>)) {
    // Step names are stored in every row and transition, like machine names.
    checkName(name, `${where}: step name`, (m) => new ConfigError(m));
    steps.set(name, resolveStep(name, step, `${where}.steps.${name}`));
  }
  const names = [...steps.keys()];
  const machineOnFailure = checkRouteStep(definition.onFailure, names, `${where}: onFailure`);
  const onCancel = checkRouteStep(definition.onCancel, names, `${where}: onCancel`);
  for (const step of steps.values()) {
    if (step.onFailure !== undefined) checkRouteStep(step.onFailure, names, `${where}.steps.${step.name}.onFailure`);
    step.onFailure ??= machineOnFailure;
    const nonRetryable = [...(step.nonRetryable ?? []), ...(machineRetry?.nonRetryable ?? [])];
    if (nonRetryable.length > 0) step.nonRetryable = nonRetryable;
  }
  const initial = definition.initial ?? "start";
  if (!steps.has(initial)) {
    throw new ConfigError(
      `${where}: initial step "${initial}" is not one of its steps (${[...steps.keys()].join(", ")})${didYouMean(initial, steps.keys())}`,
    );
  }
  return Object.freeze({
    kind: "machine" as const,
    ...common,
    schema: definition.state,
    initial: initial as K,
    steps,
    ...(onCancel === undefined ? {} : { onCancel }),
  });
}

export interface JobDefinition<Schema extends StandardSchemaV1, R> {
  name: string;
  queue?: string;
  args: Schema;
  maxAttempts?: number;
  backoff?: Backoff;
  /** Keep terminal instances this long before the GC prunes them. Default: the engine's `retention`. */
  retention?: Duration;
  timeout?: Duration;
  transactional?: boolean;
  /** Draw from one of the engine's `rateLimits` before each run. */
  rateLimit?: StepRateLimit<Out<Schema>, In<Schema>, "perform">;
  /** Errors that fail the job at once, without retries (besides NonRetryableError). */
  retry?: RetryOptions;
  /** Runs the job; its return value is the result (or return `ctx.snooze(...)` / `ctx.cancel(...)`). */
  perform: (args: Out<Schema>, ctx: StepContext<Out<Schema>, In<Schema>, "perform">) => R | Promise<R>;
}

export function defineJob<Schema extends StandardSchemaV1, R = unknown>(
  definition: JobDefinition<Schema, R>,
): Job<Schema> {
  const where = `defineJob(${typeof definition?.name === "string" ? JSON.stringify(definition.name) : "…"})`;
  if (typeof definition !== "object" || definition === null)
    throw new ConfigError("defineJob needs a definition object");
  rejectUnknownKeys(
    definition,
    [
      "name",
      "queue",
      "args",
      "maxAttempts",
      "backoff",
      "retention",
      "timeout",
      "transactional",
      "rateLimit",
      "retry",
      "perform",
    ],
    where,
    (m) => new ConfigError(m),
  );
  const common = resolveCommon({ ...definition, state: definition.args }, where, "args");
  if (typeof definition.perform !== "function")
    throw new ConfigError(`${where}: perform must be a function (args, ctx) => result`);
  const perform = definition.perform;
  const step = resolveStep(
    "perform",
    {
      // A job's return value is its result, unless it is an outcome (snooze, cancel, done).
      run: async (ctx: StepContext<Out<Schema>, In<Schema>, "perform">) => perform(ctx.state, ctx),
      timeout: definition.timeout,
      transactional: definition.transactional,
      rateLimit: definition.rateLimit,
      retry: definition.retry,
    },
    `${where}.perform`,
  );
  (step as { isJob?: boolean }).isJob = true;
  return Object.freeze({
    kind: "job" as const,
    ...common,
    schema: definition.args,
    initial: "perform" as const,
    steps: new Map([["perform", step]]),
  });
}

function resolveCommon(
  definition: {
    name: unknown;
    queue?: unknown;
    state: unknown;
    maxAttempts?: unknown;
    backoff?: Backoff;
    retention?: unknown;
  },
  where: string,
  schemaKey = "state",
) {
  const name = checkName(definition.name, `${where}: name`, (m) => new ConfigError(m));
  const queue =
    definition.queue === undefined
      ? DEFAULT_QUEUE
      : checkName(definition.queue, `${where}: queue`, (m) => new ConfigError(m));
  if (!isStandardSchema(definition.state)) {
    throw new ConfigError(
      `${where}: ${schemaKey} must be a Standard Schema (a zod, valibot or arktype schema, for example)`,
    );
  }
  return {
    name,
    queue,
    maxAttempts: checkMaxAttempts(definition.maxAttempts, `${where}: maxAttempts`),
    backoff: definition.backoff === undefined ? undefined : resolveBackoff(definition.backoff, `${where}: backoff`),
    ...(definition.retention === undefined
      ? {}
      : { retentionMs: checkRetention(definition.retention, `${where}: retention`, (m) => new ConfigError(m)) }),
  };
}

/**
 * Parses a retention — a machine's or job's `retention`, prune's `olderThan` — throwing
 * `make(message)` naming `what`; at most 100 years, as every duration (the engine's
 * `retention` is a duration option of src/config.ts, parsed alike).
 */
export function checkRetention(value: unknown, what: string, make: (message: string) => Error): number {
  return toMs(value, what, make);
}

export function checkMaxAttempts(
  value: unknown,
  what: string,
  make: (m: string) => Error = (m) => new ConfigError(m),
): number | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "number" || !Number.isInteger(value) || value < 1 || value > 1_000_000) {
    throw make(`${what} must be an integer from 1 to 1000000, got ${String(value)}`);
  }
  return value;
}

function resolveStep(name: string, step: unknown, where: string): ResolvedStep {
  if (typeof step === "function") {
    return {
      name,
      run: step as ResolvedStep["run"],
      timeoutMs: undefined,
      maxAttempts: undefined,
      backoff: undefined,
      transactional: false,
    };
  }
  if (typeof step !== "object" || step === null || typeof (step as { run?: unknown }).run !== "function") {
    throw new ConfigError(
      `${where} must be a function (ctx) => outcome or an object { run, timeout?, maxAttempts?, backoff?, transactional?, rateLimit?, onFailure?, retry? }`,
    );
  }
  rejectUnknownKeys(
    step,
    ["run", "timeout", "maxAttempts", "backoff", "transactional", "rateLimit", "onFailure", "retry"],
    where,
    (m) => new ConfigError(m),
  );
  const options = step as StepOptions<unknown, unknown, string>;
  if (options.transactional !== undefined && typeof options.transactional !== "boolean") {
    throw new ConfigError(`${where}.transactional must be a boolean`);
  }
  return {
    name,
    run: options.run as ResolvedStep["run"],
    timeoutMs:
      options.timeout === undefined ? undefined : toMs(options.timeout, `${where}.timeout`, (m) => new ConfigError(m)),
    maxAttempts: checkMaxAttempts(options.maxAttempts, `${where}.maxAttempts`),
    backoff: options.backoff === undefined ? undefined : resolveBackoff(options.backoff, `${where}.backoff`),
    transactional: options.transactional ?? false,
    ...(options.rateLimit === undefined
      ? {}
      : { rateLimit: checkStepRateLimit(options.rateLimit, `${where}.rateLimit`) }),
    // The name is checked against the machine's steps once they are all known (defineMachine).
    ...(options.onFailure === undefined ? {} : { onFailure: options.onFailure }),
    ...(options.retry === undefined ? {} : { nonRetryable: checkRetry(options.retry, `${where}.retry`)?.nonRetryable }),
  };
}

/** The shape of a step's `rateLimit`; whether the name exists is checked by the engine that runs it. */
function checkStepRateLimit(value: unknown, where: string): StepRateLimit {
  if (typeof value !== "object" || value === null)
    throw new ConfigError(`${where} must be an object { name, partition?, weight? }`);
  rejectUnknownKeys(value, ["name", "partition", "weight"], where, (m) => new ConfigError(m));
  const limit = value as StepRateLimit;
  checkName(limit.name, `${where}.name`, (m) => new ConfigError(m));
  if (limit.partition !== undefined && typeof limit.partition !== "function") {
    throw new ConfigError(`${where}.partition must be a function (ctx) => string | number`);
  }
  const weight = limit.weight;
  // At most the limit's burst, which the engine checks (it knows the limit): a larger draw never fits.
  if (
    weight !== undefined &&
    typeof weight !== "function" &&
    !(typeof weight === "number" && Number.isInteger(weight) && weight >= 1 && weight <= 2 ** 31 - 1)
  ) {
    throw new ConfigError(
      `${where}.weight must be a whole number of tokens from 1 to ${2 ** 31 - 1} or a function (ctx) => number, got ${describe(weight)}`,
    );
  }
  return Object.freeze({ ...limit });
}
