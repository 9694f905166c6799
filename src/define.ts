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
import type { AwaitOptions, AwaitSpec, ScheduleOptions, SpawnOptions, StepOutcome } from "./outcome.js";
import { isStandardSchema, type StandardSchemaV1 } from "./schema.js";
import { didYouMean, rejectUnknownKeys } from "./suggest.js";
import { checkName } from "./names.js";
import { checkConcurrency, type ConcurrencyOption } from "./runtime/definition-flow.js";

import type {
  AnySpec,
  CheckedSpecs,
  ChildOutcome,
  ReceivedOf,
  ResultInOf,
  ResultOf,
  SignalSchemas,
  PayloadsOf,
} from "./machine-types.js";
import { checkTargets, resolveTyping, type MachineGraph, type Migrations } from "./machine-typing.js";
import { checkRetry, checkRouteStep, type RetryOptions } from "./routing.js";

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

export type { AwaitSpec, JoinCondition, SpawnOptions, StepOutcome } from "./outcome.js";
export type { ChildOutcome, ChildSpec, ReceivedSignal, SignalSchemas } from "./machine-types.js";

/** `ctx.log`: the engine's logger, each line tagged with the instance, machine, step and attempt. */
export interface StepLogger {
  /** Logs `message` with `fields` at level debug. */
  debug(message: string, fields?: Record<string, unknown>): void;
  /** Logs `message` with `fields` at level info. */
  info(message: string, fields?: Record<string, unknown>): void;
  /** Logs `message` with `fields` at level warn. */
  warn(message: string, fields?: Record<string, unknown>): void;
  /** Logs `message` with `fields` at level error. */
  error(message: string, fields?: Record<string, unknown>): void;
}

/** Insert options shared by `engine.insert` and `ctx.spawn` children. */
export interface InstanceOptions {
  /** The queue it runs on. Default: the machine's `queue`. */
  queue?: string;
  /** Lower runs first among the due instances of its queue. Default 0. */
  priority?: number;
  /** Run its first step after this long (not with `runAt`). Default: at once. */
  delay?: Duration;
  /** Run its first step at this time (not with `delay`). Default: now. */
  runAt?: Date;
  /** The attempts each of its steps has, over the step's and the machine's `maxAttempts`. */
  maxAttempts?: number;
  /** Business key, unique among live instances; addresses signals. */
  correlationKey?: string;
  /**
   * Steps of instances sharing this key never run at the same time, on any node. Overrides the
   * definition's `concurrency.key`; null: no key, whatever the definition says.
   */
  concurrencyKey?: string | null;
  /**
   * A retried insert with this key, within the engine's `idempotencyWindow` (default 24 h) of the first,
   * inserts nothing and returns the first's id with `inserted: false`, even once that instance finished
   * or was pruned.
   */
  idempotencyKey?: string;
  /**
   * With `correlationKey`: what an instance with that key, live or finished within the
   * `idempotencyWindow`, means. "allow" (default): only a live one is returned, a finished one is
   * not looked at; "reuse": it is returned (`inserted: false`); "reject": the insert throws
   * KeyExistsError naming the key and that instance.
   */
  ifExists?: "reuse" | "reject" | "allow";
}

/**
 * What a step sees. `Ev` maps the machine's declared events to their payloads (any event when it declares
 * none), `RIn` is what `done` takes, `To` the steps this step may go to (its `to`, else every step).
 */
export interface StepContext<
  State,
  StateIn,
  K extends string,
  Ev extends Record<string, unknown> = Record<string, unknown>,
  RIn = unknown,
  To extends string = K,
> {
  /** The instance's id. */
  readonly id: string;
  /** The name of its machine. */
  readonly machine: string;
  /** The step running. */
  readonly step: K;
  /** The instance's state, as committed by the step before (validated by the machine's schema). */
  readonly state: State;
  /** 1-based attempt number of this step. */
  readonly attempt: number;
  /** The signals the await consumed, narrowed by `event` when the machine declares `signals`. */
  readonly awaited: readonly ReceivedOf<Ev>[];
  /** The attempts this step has in all: the last one is `ctx.attempt === ctx.maxAttempts`. */
  readonly maxAttempts: number;
  /** How the await that led to this step ended; undefined when this step was not reached from an await. */
  readonly resumedBy: "signal" | "timeout" | undefined;
  /** Set in the machine's onFailure step (and the steps after it): what failed. */
  readonly failure: StepFailure | undefined;
  /** Set in the machine's onCancel step: the cancel it cleans up after. */
  readonly cancellation: StepCancellation | undefined;
  /** In the step a spawn joins on: how each child finished; empty elsewhere. */
  readonly children: readonly ChildOutcome[];
  /** The children of a join that are instances of `machine`, their results typed by it. */
  childrenOf<M extends AnyMachine>(machine: M): readonly ChildOutcome<M>[];
  /** The instance's correlation key, null when it has none. */
  readonly correlationKey: string | null;
  /** When the instance was inserted. */
  readonly insertedAt: Date;
  /** Aborted on step timeout, cancel, lost lease and shutdown. */
  readonly abortSignal: AbortSignal;
  /** Logs tagged with this instance and step. */
  readonly log: StepLogger;
  /** The transaction that will commit this step's outcome. Only in steps declared `transactional: true`. */
  readonly client: pg.ClientBase;
  /**
   * The engine's clock: database time (as of the claim, plus the time since). In tests, advanceTime
   * moves it with the timers it fires, so code that computes remaining time can be tested.
   */
  now(): Date;

  /** Commit `state` (or keep it) and run `step`, now or after `delay` / at `runAt`. */
  next(step: To, state?: StateIn, options?: ScheduleOptions): StepOutcome;
  /** Commit `state`, park until `spec` is satisfied, then run `step` with the consumed signals in `ctx.awaited`. */
  await(spec: AwaitSpec<keyof Ev & string>, step: To, state?: StateIn, options?: AwaitOptions<To>): StepOutcome;
  /**
   * Commit `state`, insert `children` atomically, and run `step` once all of them are terminal, or
   * once `options.join` holds (then the children still live are cancelled, unless `remaining: "keep"`).
   */
  spawn<const T extends readonly AnySpec[]>(
    children: T & CheckedSpecs<T>,
    step: To,
    state?: StateIn,
    options?: SpawnOptions,
  ): StepOutcome;
  /**
   * Publish `value` (JSON) as `key` for `engine.waitForEvent`, `engine.get` and history: committed
   * with this step's outcome, or not at all (a failed attempt publishes nothing). A later publication
   * of the same key replaces it.
   */
  publish(key: string, value: unknown): void;
  /** Finish: terminal `done`, `result` stored (checked by the machine's `result` schema when it has one). */
  done(...result: undefined extends RIn ? [result?: RIn] : [result: RIn]): StepOutcome;
  /** Run this step again after `delay`; not a failure, the attempt is not consumed. */
  snooze(delay: Duration): StepOutcome;
  /** Finish: terminal `cancelled`, no retry. */
  cancel(reason?: string): StepOutcome;
}

export type StepFn<
  State,
  StateIn,
  K extends string,
  Ev extends Record<string, unknown> = Record<string, unknown>,
  RIn = unknown,
  To extends string = K,
> = (ctx: StepContext<State, StateIn, K, Ev, RIn, To>) => StepOutcome | Promise<StepOutcome>;

/** A step declared as an object: its `run` function with per-step options. */
export interface StepOptions<
  State,
  StateIn,
  K extends string,
  Ev extends Record<string, unknown> = Record<string, unknown>,
  RIn = unknown,
  To extends string = K,
> {
  /** The step's code: returns the outcome (`ctx.next`, `ctx.done`, ...). */
  run: StepFn<State, StateIn, K, Ev, RIn, To>;
  /** The steps this one may go to (ctx.next, await, spawn, onTimeout): checked at compile time and at run time. */
  to?: readonly NoInfer<To>[];
  /** Abort `ctx.abortSignal` and fail the attempt after this long. */
  timeout?: Duration;
  /** The attempts this step has before it fails (or routes to `onFailure`). Default: the machine's, else 20. */
  maxAttempts?: number;
  /** How long to wait before retrying a failed attempt. Default: the machine's, else exponential from 1 s to 1 h. */
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

/** A step: its run function alone, or {@link StepOptions}. */
export type StepDefinition<
  State,
  StateIn,
  K extends string,
  Ev extends Record<string, unknown> = Record<string, unknown>,
  RIn = unknown,
  To extends string = K,
> = StepFn<State, StateIn, K, Ev, RIn, To> | StepOptions<State, StateIn, K, Ev, RIn, To>;

/** A step as the runtime sees it, whatever form it was declared in. */
export interface ResolvedStep {
  name: string;
  run: (ctx: StepContext<unknown, unknown, string>) => unknown;
  timeoutMs: number | undefined;
  maxAttempts: number | undefined;
  backoff: BackoffFn | undefined;
  transactional: boolean;
  rateLimit?: StepRateLimit;
  /** Declared targets (`to`); undefined: any step of the machine. */
  to?: readonly string[];
  /** The step to route to after the last attempt fails (the step's own, else the machine's). */
  onFailure?: string;
  /** Error classes that fail the step at once (the step's own and the machine's). */
  nonRetryable?: RetryOptions["nonRetryable"];
}

declare const TYPES: unique symbol;

/** A checked definition, as `defineMachine` and `defineJob` return it: what the engine runs. */
export interface Machine<
  Schema extends StandardSchemaV1 = StandardSchemaV1,
  K extends string = string,
  Kind extends "machine" | "job" = "machine" | "job",
  Sig extends SignalSchemas = SignalSchemas,
  R = unknown,
> {
  /** "machine" from defineMachine, "job" from defineJob. */
  readonly kind: Kind;
  /** Its stable name, stored in every row. */
  readonly name: string;
  /** The queue its instances run on unless inserted with another. */
  readonly queue: string;
  /** The schema of its state (a job's args). */
  readonly schema: Schema;
  /** The step a new instance starts at ("perform" for a job). */
  readonly initial: K;
  /** Its steps by name, resolved. */
  readonly steps: ReadonlyMap<string, ResolvedStep>;
  /** The default attempts of its steps; undefined: 20. */
  readonly maxAttempts: number | undefined;
  /** The default backoff of its steps; undefined: the engine's exponential default. */
  readonly backoff: BackoffFn | undefined;
  /** How long terminal instances are kept before the GC prunes them; undefined: the engine's `retention`. */
  readonly retentionMs?: number;
  /** The concurrency key of every new instance, from its input (definition-flow.ts). */
  readonly concurrency?: {
    /** Computes the key from the instance's input. */
    key: (input: unknown) => string;
    /** How many steps of instances with one key may run at once. */
    limit: number;
  };
  /** Declared signal payload schemas; undefined: any event, payloads unchecked. */
  readonly signals: Readonly<SignalSchemas> | undefined;
  /** Schema of the result, checked before `done` commits. */
  readonly result: StandardSchemaV1 | undefined;
  /** Version of the definition (default 1); older instances are upcast by `migrate` when claimed. */
  readonly version: number;
  /** Upcasters by the version they produce. */
  readonly migrations: Migrations;
  /** The static graph: steps and their declared targets. */
  graph(): MachineGraph;
  /** The graph as a Mermaid state diagram. */
  toMermaid(): string;
  /** The step a cancel runs before the instance ends cancelled. */
  readonly onCancel?: string;
  /** Type-level only. */
  readonly [TYPES]?: {
    /** Its step names. */
    steps: K;
    /** Its declared signal schemas. */
    signals: Sig;
    /** Its result type. */
    result: R;
  };
}

/** Any machine or job, whatever its types: what engine options and helpers take. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyMachine = Machine<any, any, "machine" | "job", any, any>;
/** A job: a machine of the one step "perform", defined by `defineJob`. */
export type Job<Schema extends StandardSchemaV1 = StandardSchemaV1, R = unknown> = Machine<
  Schema,
  "perform",
  "job",
  SignalSchemas,
  R
>;
export type { ChildOutcome as ChildOutcomeOf, ResultOf };

type In<S extends StandardSchemaV1> = StandardSchemaV1.InferInput<S>;
type Out<S extends StandardSchemaV1> = StandardSchemaV1.InferOutput<S>;

/** The steps a step may go to: those it declares in `to` (`X`), else every step. */
type Targets<X, K extends string> = unknown extends X ? K : X & K;

/**
 * A step in a definition. `X` is inferred from its `to` (unknown when it declares none): its ctx then
 * accepts only those targets.
 */
export type DeclaredStep<State, StateIn, K extends string, Ev extends Record<string, unknown>, RIn, X> =
  | StepFn<State, StateIn, K, Ev, RIn>
  | (Omit<StepOptions<State, StateIn, K, Ev, RIn, Targets<X, K>>, "to"> & {
      /** The steps this one may go to (ctx.next, await, spawn, onTimeout): checked at compile time and at run time. */
      to?: readonly NoInfer<Targets<X, K>>[];
    });

/** `K` is the step names; `S` maps a step name to the targets its `to` declares (unknown: any step). */
export interface MachineDefinition<
  Schema extends StandardSchemaV1,
  K extends string,
  Sig extends SignalSchemas = SignalSchemas,
  RS extends StandardSchemaV1 | undefined = undefined,
  S = unknown,
> {
  /** Stable name, stored in every row. */
  name: string;
  /** The queue its instances run on unless inserted with another. Default "default". */
  queue?: string;
  /** The schema of its state, checked on insert and on every transition. */
  state: Schema;
  /** The step a new instance starts at. Default "start". */
  initial?: NoInfer<K>;
  /** Its steps by name: a run function, or {@link StepOptions}. */
  // The first mapped type gives the step names and each step's ctx; the second only infers each `to` (S).
  steps: {
    [P in K]: DeclaredStep<
      Out<Schema>,
      In<Schema>,
      K,
      PayloadsOf<Sig>,
      ResultInOf<RS>,
      P extends keyof S ? S[P] : unknown
    >;
  } & {
    [P in keyof S]:
      | StepFn<Out<Schema>, In<Schema>, K, PayloadsOf<Sig>, ResultInOf<RS>>
      | {
          /** The steps this one may go to. */
          to?: readonly S[P][];
        };
  };
  /** Declared events and their payload schemas: ctx.await takes only these, and payloads are checked when sent. */
  signals?: Sig;
  /** Schema of the result passed to ctx.done, checked before `done` commits. */
  result?: RS;
  /** Version of this definition (default 1): bump it when the state's shape changes, with an upcaster in `migrate`. */
  version?: number;
  /**
   * Upcasters by the version they produce: `{ 2: (stateV1) => stateV2 }`, applied when an older instance is
   * claimed.
   */
  migrate?: Record<number, (state: unknown) => unknown>;
  /** Default for the machine's steps (a step's own `maxAttempts` wins). Default 20. */
  maxAttempts?: number;
  /** Default for the machine's steps (a step's own `backoff` wins). Default exponential, from 1 s to 1 h. */
  backoff?: Backoff;
  /** Keep terminal instances this long before the GC prunes them. Default: the engine's `retention`. */
  retention?: Duration;
  /** A concurrency key for every instance, from its state; a call's own `concurrencyKey` wins. */
  concurrency?: ConcurrencyOption<Out<Schema>>;
  /** The rate limit of every step that declares none of its own. */
  rateLimit?: StepRateLimit<Out<Schema>, In<Schema>, K>;
  /** For every step without its own: after the last attempt fails, run this step with `ctx.failure`. */
  onFailure?: NoInfer<K>;
  /** engine.cancel runs this step (with `ctx.cancellation`) before the instance ends cancelled. */
  onCancel?: NoInfer<K>;
  /** Errors that fail any step of the machine at once, without retries. */
  retry?: RetryOptions;
}

export const DEFAULT_QUEUE = "default";

/**
 * Defines a machine: checks the definition (names, steps, targets, options) once and throws a
 * ConfigError naming what is wrong. Pass the result to the engine's `machines`.
 */
export function defineMachine<
  Schema extends StandardSchemaV1,
  K extends string,
  Sig extends SignalSchemas = SignalSchemas,
  RS extends StandardSchemaV1 | undefined = undefined,
  const S = unknown,
>(definition: MachineDefinition<Schema, K, Sig, RS, S>): Machine<Schema, K, "machine", Sig, ResultOutOf<RS>> {
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
      "concurrency",
      "rateLimit",
      "signals",
      "result",
      "version",
      "migrate",
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
  const rateLimit =
    definition.rateLimit === undefined ? undefined : checkStepRateLimit(definition.rateLimit, `${where}.rateLimit`);
  const machineRetry = checkRetry(definition.retry, `${where}: retry`);
  for (const [name, step] of Object.entries(definition.steps as Record<string, unknown>)) {
    // Step names are stored in every row and transition, like machine names.
    checkName(name, `${where}: step name`, (m) => new ConfigError(m));
    const resolved = resolveStep(name, step, `${where}.steps.${name}`);
    steps.set(name, resolved.rateLimit || !rateLimit ? resolved : { ...resolved, rateLimit });
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
      `${where}: initial step "${initial}" is not one of its steps (${[...steps.keys()].join(", ")})` +
        `${didYouMean(initial, steps.keys())}`,
    );
  }
  const typing = resolveTyping({ ...definition, name: common.name }, steps, initial, where);
  return Object.freeze({
    kind: "machine" as const,
    ...common,
    ...typing,
    schema: definition.state,
    initial: initial as K,
    steps,
    ...(onCancel === undefined ? {} : { onCancel }),
  });
}

type ResultOutOf<RS> = RS extends StandardSchemaV1 ? Out<RS> : unknown;

/** The args of a job that declares none: any JSON value, or nothing (null). */
export type AnyArgs = StandardSchemaV1<unknown, unknown>;

/** What `defineJob` takes. */
export interface JobDefinition<
  Schema extends StandardSchemaV1,
  R,
  RS extends StandardSchemaV1 | undefined = undefined,
> {
  /** Stable name, stored in every row. */
  name: string;
  /** The queue its instances run on unless inserted with another. Default "default". */
  queue?: string;
  /** Schema of the args. Optional: without it a job takes any JSON value, or none. */
  args?: Schema;
  /** Schema of the result (what perform returns), checked before `done` commits. */
  result?: RS;
  /** The attempts `perform` has before the job fails. Default 20. */
  maxAttempts?: number;
  /** How long to wait before retrying a failed attempt. Default exponential, from 1 s to 1 h. */
  backoff?: Backoff;
  /** Keep terminal instances this long before the GC prunes them. Default: the engine's `retention`. */
  retention?: Duration;
  /** Abort `ctx.abortSignal` and fail the attempt after this long. Default: no timeout. */
  timeout?: Duration;
  /** Run `perform` inside the transaction that commits its outcome; `ctx.client` is that transaction. */
  transactional?: boolean;
  /** Draw from one of the engine's `rateLimits` before each run. */
  rateLimit?: StepRateLimit<Out<Schema>, In<Schema>, "perform">;
  /** A concurrency key for every instance, from its args; a call's own `concurrencyKey` wins. */
  concurrency?: ConcurrencyOption<Out<Schema>>;
  /** Errors that fail the job at once, without retries (besides NonRetryableError). */
  retry?: RetryOptions;
  /** Runs the job; its return value is the result (or return `ctx.snooze(...)` / `ctx.cancel(...)`). */
  perform: (
    args: Out<Schema>,
    ctx: StepContext<Out<Schema>, In<Schema>, "perform", Record<string, unknown>, ResultInOf<RS>>,
  ) => R | Promise<R>;
}

/**
 * Defines a job: a machine of one step, `perform`, whose return value is the result. Checks the
 * definition once and throws a ConfigError naming what is wrong.
 */
export function defineJob<
  Schema extends StandardSchemaV1 = AnyArgs,
  R = unknown,
  RS extends StandardSchemaV1 | undefined = undefined,
>(
  definition: JobDefinition<Schema, R, RS>,
): Job<Schema, RS extends StandardSchemaV1 ? Out<RS> : Exclude<Awaited<R>, StepOutcome>> {
  const where = `defineJob(${typeof definition?.name === "string" ? JSON.stringify(definition.name) : "…"})`;
  if (typeof definition !== "object" || definition === null)
    throw new ConfigError("defineJob needs a definition object");
  rejectUnknownKeys(
    definition,
    [
      "name",
      "queue",
      "args",
      "result",
      "maxAttempts",
      "backoff",
      "retention",
      "timeout",
      "transactional",
      "rateLimit",
      "concurrency",
      "retry",
      "perform",
    ],
    where,
    (m) => new ConfigError(m),
  );
  const args = definition.args ?? (anyArgs as unknown as Schema);
  const common = resolveCommon({ ...definition, state: args }, where, "args");
  if (typeof definition.perform !== "function")
    throw new ConfigError(`${where}: perform must be a function (args, ctx) => result`);
  const perform = definition.perform;
  const step = resolveStep(
    "perform",
    {
      // A job's return value is its result, unless it is an outcome (snooze, cancel, done).
      // Not async: a value returned at once settles the step without a promise (invokeStep).
      run: (ctx: StepContext<Out<Schema>, In<Schema>, "perform">) => perform(ctx.state, ctx),
      timeout: definition.timeout,
      transactional: definition.transactional,
      rateLimit: definition.rateLimit,
      retry: definition.retry,
    },
    `${where}.perform`,
  );
  (step as { isJob?: boolean }).isJob = true;
  const steps = new Map([["perform", step]]);
  return Object.freeze({
    kind: "job" as const,
    ...common,
    ...resolveTyping({ result: definition.result, name: common.name }, steps, "perform", where),
    schema: args,
    initial: "perform" as const,
    steps,
  });
}

/** A job's args when it declares none: any value, nothing stored as null. */
const anyArgs: AnyArgs = {
  "~standard": {
    version: 1,
    vendor: "gen-durable",
    validate: (value) => ({ value: value === undefined ? null : value }),
  },
};

function resolveCommon(
  definition: {
    name: unknown;
    queue?: unknown;
    state: unknown;
    maxAttempts?: unknown;
    backoff?: Backoff;
    retention?: unknown;
    concurrency?: unknown;
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
    ...(definition.concurrency === undefined
      ? {}
      : {
          concurrency: checkConcurrency(definition.concurrency, `${where}.concurrency`) as {
            key: (input: unknown) => string;
            limit: number;
          },
        }),
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
      `${where} must be a function (ctx) => outcome or an object ` +
        "{ run, timeout?, maxAttempts?, backoff?, transactional?, rateLimit?, onFailure?, retry? }",
    );
  }
  rejectUnknownKeys(
    step,
    ["run", "timeout", "maxAttempts", "backoff", "transactional", "rateLimit", "to", "onFailure", "retry"],
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
    ...(options.to === undefined ? {} : { to: checkTargets(options.to, `${where}.to`) }),
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
      `${where}.weight must be a whole number of tokens from 1 to ${2 ** 31 - 1} or a function (ctx) => number, ` +
        `got ${describe(weight)}`,
    );
  }
  return Object.freeze({ ...limit });
}
