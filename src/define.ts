/**
 * Machine and job definitions. `defineMachine` checks a definition once, at
 * import time, and keeps the step names in the type so that `ctx.next("shp")`
 * is a compile error.
 */
import type pg from "pg";
import { type Backoff, type BackoffFn, resolveBackoff } from "./backoff.js";
import { type Duration, describe, toMs } from "./duration.js";
import { ConfigError } from "./errors.js";
import type { AwaitOptions, AwaitSpec, ScheduleOptions, SpawnOptions, StepOutcome } from "./outcome.js";
import { isStandardSchema, type StandardSchemaV1 } from "./schema.js";
import { didYouMean, rejectUnknownKeys } from "./suggest.js";
import { checkName } from "./names.js";
import { checkConcurrency, type ConcurrencyOption } from "./runtime/definition-flow.js";

export type { AwaitSpec, JoinCondition, SpawnOptions, StepOutcome } from "./outcome.js";

/** A signal consumed by an await, as seen in `ctx.awaited`. */
export interface ReceivedSignal {
  /** The stored signal's id. */
  id: string;
  /** Its name, as sent to `engine.signal`. */
  event: string;
  /** Its payload (JSON; null when none was sent). */
  payload: unknown;
  /** When it was stored (database time). */
  insertedAt: Date;
}

/** A child's outcome, as seen in `ctx.children` on a join. */
export interface ChildOutcome {
  /** The child's instance id. */
  id: string;
  /** The child's machine or job. */
  machine: string;
  /** Its status at the join: `done`, `failed` or `cancelled` (or a live one, when the join resumed early). */
  status: string;
  /** Its result when done; null otherwise. */
  result: unknown;
  /** Its error (an ErrorRecord) when failed or cancelled; null otherwise. */
  error: unknown;
}

/** `ctx.log`: the engine's logger with the instance, machine, step and attempt added to every line. */
export interface StepLogger {
  /** A line at debug level, with optional structured fields. */
  debug(message: string, fields?: Record<string, unknown>): void;
  /** A line at info level, with optional structured fields. */
  info(message: string, fields?: Record<string, unknown>): void;
  /** A line at warn level, with optional structured fields. */
  warn(message: string, fields?: Record<string, unknown>): void;
  /** A line at error level, with optional structured fields. */
  error(message: string, fields?: Record<string, unknown>): void;
}

/** Insert options shared by `engine.insert` and `ctx.spawn` children. */
export interface InstanceOptions {
  /** The queue its steps run on. Default: the definition's `queue` ("default"). */
  queue?: string;
  /** An integer; lower runs first among due instances of its queue. Default 0. */
  priority?: number;
  /** Run the first step after this long (not with `runAt`). */
  delay?: Duration;
  /** Run the first step at this time (not with `delay`). */
  runAt?: Date;
  /** Attempts of each step, for the steps that do not set their own. Default: the definition's (20). */
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

/** A child for `ctx.spawn`: a machine with `state`, or a job with `args`. */
export type ChildSpec = InstanceOptions & {
  /** The child's machine or job. */
  machine: AnyMachine;
} & (
    | {
        /** The child machine's initial state. */
        state: unknown;
      }
    | {
        /** The child job's arguments. */
        args: unknown;
      }
    | object
  );

/** `ctx`: what a step knows of its instance, and the helpers that make its outcome. */
export interface StepContext<State, StateIn, K extends string> {
  /** The instance's id. */
  readonly id: string;
  /** The machine's (or job's) name. */
  readonly machine: string;
  /** The step running. */
  readonly step: K;
  /** The last committed state, as the schema's output (a job's args). */
  readonly state: State;
  /** 1-based attempt number of this step. */
  readonly attempt: number;
  /** The signals the await that resumed this step consumed, in arrival order; empty otherwise. */
  readonly awaited: readonly ReceivedSignal[];
  /** On a join step: each child of the spawn with its outcome, exactly once; empty otherwise. */
  readonly children: readonly ChildOutcome[];
  /** The instance's correlation key, if it has one. */
  readonly correlationKey: string | null;
  /** When the instance was inserted. */
  readonly insertedAt: Date;
  /** Aborted on step timeout, cancel, lost lease and shutdown. */
  readonly abortSignal: AbortSignal;
  /** A logger whose lines carry the instance, machine, step and attempt. */
  readonly log: StepLogger;
  /** The transaction that will commit this step's outcome. Only in steps declared `transactional: true`. */
  readonly client: pg.ClientBase;

  /** Commit `state` (or keep it) and run `step`, now or after `delay` / at `runAt`. */
  next(step: K, state?: StateIn, options?: ScheduleOptions): StepOutcome;
  /** Commit `state`, park until `spec` is satisfied, then run `step` with the consumed signals in `ctx.awaited`. */
  await(spec: AwaitSpec, step: K, state?: StateIn, options?: AwaitOptions<K>): StepOutcome;
  /**
   * Commit `state`, insert `children` atomically, and run `step` once all of them are terminal, or
   * once `options.join` holds (then the children still live are cancelled, unless `remaining: "keep"`).
   */
  spawn(children: readonly ChildSpec[], step: K, state?: StateIn, options?: SpawnOptions): StepOutcome;
  /**
   * Publish `value` (JSON) as `key` for `engine.waitForEvent`, `engine.get` and history: committed
   * with this step's outcome, or not at all (a failed attempt publishes nothing). A later publication
   * of the same key replaces it.
   */
  publish(key: string, value: unknown): void;
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

/** A step declared with options: `{ run, timeout?, maxAttempts?, backoff?, transactional?, rateLimit? }`. */
export interface StepOptions<State, StateIn, K extends string> {
  /** The step's code: `(ctx) => outcome`. */
  run: StepFn<State, StateIn, K>;
  /** Abort `ctx.abortSignal` and fail the attempt after this long. */
  timeout?: Duration;
  /** Attempts of this step before the instance fails. Default: the machine's `maxAttempts` (20). */
  maxAttempts?: number;
  /** The wait before each retry of this step. Default: the machine's `backoff`. */
  backoff?: Backoff;
  /** Run inside the transaction that commits the outcome; `ctx.client` is that transaction. */
  transactional?: boolean;
  /** Draw from one of the engine's `rateLimits` before each run; a short bucket postpones the step. */
  rateLimit?: StepRateLimit<State, StateIn, K>;
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

/** A step: a function `(ctx) => outcome`, or `{ run, ...options }`. */
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
}

declare const TYPES: unique symbol;

/** A machine or job, as `defineMachine` and `defineJob` return it: checked, frozen, ready to list in `machines`. */
export interface Machine<
  Schema extends StandardSchemaV1 = StandardSchemaV1,
  K extends string = string,
  Kind extends "machine" | "job" = "machine" | "job",
> {
  /** "machine" or "job". */
  readonly kind: Kind;
  /** Its name, stored in every row. */
  readonly name: string;
  /** The queue of its instances unless an insert says otherwise. */
  readonly queue: string;
  /** The schema of its state (a job's args). */
  readonly schema: Schema;
  /** The first step of every instance ("perform" for a job). */
  readonly initial: K;
  /** Its steps by name, resolved. */
  readonly steps: ReadonlyMap<string, ResolvedStep>;
  /** Attempts of each step that sets none; undefined: 20. */
  readonly maxAttempts: number | undefined;
  /** The retry delay of each step that sets none; undefined: the default backoff. */
  readonly backoff: BackoffFn | undefined;
  /** How long terminal instances are kept before the GC prunes them; undefined: the engine's `retention`. */
  readonly retentionMs?: number;
  /** The concurrency key of every new instance, from its input (definition-flow.ts). */
  readonly concurrency?: {
    /** The key of an instance, from its state or args. */
    key: (input: unknown) => string;
    /** Steps running at once per key (1). */
    limit: number;
  };
  /** Type-level only. */
  readonly [TYPES]?: {
    /** The step names. */
    steps: K;
  };
}

/** Any machine or job, whatever its schema and steps: the type of the `machines` option. */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type AnyMachine = Machine<any, any, "machine" | "job">;
/** A job, as `defineJob` returns it: a machine with one step, `perform`. */
export type Job<Schema extends StandardSchemaV1 = StandardSchemaV1> = Machine<Schema, "perform", "job">;

type In<S extends StandardSchemaV1> = StandardSchemaV1.InferInput<S>;
type Out<S extends StandardSchemaV1> = StandardSchemaV1.InferOutput<S>;

/** What `defineMachine` takes. */
export interface MachineDefinition<Schema extends StandardSchemaV1, K extends string> {
  /** Stable name, stored in every row. */
  name: string;
  /** The queue its instances run on unless an insert says otherwise. Default "default". */
  queue?: string;
  /** The state's schema (any Standard Schema: zod, valibot, arktype), checked on insert and on every transition. */
  state: Schema;
  /** The first step. Default "start". */
  initial?: NoInfer<K>;
  /** The steps by name: each a function `(ctx) => outcome` or `{ run, ...options }`. */
  steps: { [P in K]: StepDefinition<Out<Schema>, In<Schema>, K> };
  /** Default for the machine's steps (a step's own `maxAttempts` wins). Default 20. */
  maxAttempts?: number;
  /** Default for the machine's steps (a step's own `backoff` wins). Default: exponential from 1 s to 1 h, jittered. */
  backoff?: Backoff;
  /** Keep terminal instances this long before the GC prunes them. Default: the engine's `retention`. */
  retention?: Duration;
  /** A concurrency key for every instance, from its state; a call's own `concurrencyKey` wins. */
  concurrency?: ConcurrencyOption<Out<Schema>>;
  /** The rate limit of every step that declares none of its own. */
  rateLimit?: StepRateLimit<Out<Schema>, In<Schema>, K>;
}

export const DEFAULT_QUEUE = "default";

/**
 * Declares a machine: checks the definition now (a ConfigError names what is wrong) and returns it, frozen, with its
 * step names in its type. List it in the engine's `machines` to run it.
 */
export function defineMachine<Schema extends StandardSchemaV1, K extends string>(
  definition: MachineDefinition<Schema, K>,
): Machine<Schema, K, "machine"> {
  const where = `defineMachine(${typeof definition?.name === "string" ? JSON.stringify(definition.name) : "…"})`;
  if (typeof definition !== "object" || definition === null)
    throw new ConfigError("defineMachine needs a definition object");
  rejectUnknownKeys(
    definition,
    ["name", "queue", "state", "initial", "steps", "maxAttempts", "backoff", "retention", "concurrency", "rateLimit"],
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
  for (const [name, step] of Object.entries(definition.steps as Record<string, unknown>)) {
    // Step names are stored in every row and transition, like machine names.
    checkName(name, `${where}: step name`, (m) => new ConfigError(m));
    const resolved = resolveStep(name, step, `${where}.steps.${name}`);
    steps.set(name, resolved.rateLimit || !rateLimit ? resolved : { ...resolved, rateLimit });
  }
  const initial = definition.initial ?? "start";
  if (!steps.has(initial)) {
    throw new ConfigError(
      `${where}: initial step "${initial}" is not one of its steps (${[...steps.keys()].join(", ")})${didYouMean(initial, steps.keys())}`,
    );
  }
  return Object.freeze({ kind: "machine" as const, ...common, schema: definition.state, initial: initial as K, steps });
}

/** What `defineJob` takes. */
export interface JobDefinition<Schema extends StandardSchemaV1, R> {
  /** Stable name, stored in every row. */
  name: string;
  /** The queue its instances run on unless an insert says otherwise. Default "default". */
  queue?: string;
  /** The arguments' schema (any Standard Schema), checked on insert. */
  args: Schema;
  /** Attempts before the instance fails. Default 20. */
  maxAttempts?: number;
  /** The wait before each retry. Default: exponential from 1 s to 1 h, jittered. */
  backoff?: Backoff;
  /** Keep terminal instances this long before the GC prunes them. Default: the engine's `retention`. */
  retention?: Duration;
  /** Abort `ctx.abortSignal` and fail the attempt after this long. */
  timeout?: Duration;
  /** Run inside the transaction that records the result; `ctx.client` is that transaction. */
  transactional?: boolean;
  /** Draw from one of the engine's `rateLimits` before each run. */
  rateLimit?: StepRateLimit<Out<Schema>, In<Schema>, "perform">;
  /** A concurrency key for every instance, from its args; a call's own `concurrencyKey` wins. */
  concurrency?: ConcurrencyOption<Out<Schema>>;
  /** Runs the job; its return value is the result (or return `ctx.snooze(...)` / `ctx.cancel(...)`). */
  perform: (args: Out<Schema>, ctx: StepContext<Out<Schema>, In<Schema>, "perform">) => R | Promise<R>;
}

/**
 * Declares a job: a machine with one step, `perform(args, ctx)`, whose return value is its result. Checked now (a
 * ConfigError names what is wrong); list it in the engine's `machines` to run it.
 */
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
      "concurrency",
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
      `${where} must be a function (ctx) => outcome or an object { run, timeout?, maxAttempts?, backoff?, transactional?, rateLimit? }`,
    );
  }
  rejectUnknownKeys(
    step,
    ["run", "timeout", "maxAttempts", "backoff", "transactional", "rateLimit"],
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
