/**
 * runStep: one step of a machine or job, run in isolation with a real step
 * context, its outcome returned as plain data. No database is needed, except
 * for a transactional step given a `client`.
 *
 * What the step returned or threw is judged by the engine's own judge
 * (runtime/judge.ts), so an invalid outcome or an invalid new state gives
 * exactly the error the engine would record for that attempt; the context and
 * the timeout are the engine's own too (runtime/context.ts, runtime/invoke.ts).
 * What it does not do: claim, commit, retry, or deliver signals. Those are the
 * engine's, tested by drain().
 */
import type pg from "pg";
import { DEFAULTS } from "../config.js";
import type { AnyMachine, ChildOutcome, Machine, ReceivedSignal, ResolvedStep, StepContext } from "../define.js";
import { describe } from "../duration.js";
import { ValidationError } from "../errors.js";
import { encodeJson, toErrorRecord, type ErrorRecord } from "../json.js";
import { silentLogger, type Logger } from "../logger.js";
import { checkKey, checkName } from "../names.js";
import { isTerminal } from "../status.js";
import type { AwaitSpec } from "../outcome.js";
import { attemptLimit, type Attempt, type ClaimedRow } from "../runtime/attempt.js";
import { createContext } from "../runtime/context.js";
import { invokeStep } from "../runtime/invoke.js";
import { judgeReturn, judgeThrow, readOutcome } from "../runtime/judge.js";
import { StepAbort } from "../runtime/step-abort.js";
import { isStandardSchema, validate, type StandardSchemaV1 } from "../schema.js";
import { didYouMean, rejectUnknownKeys } from "../suggest.js";

/** `ctx.next(...)`: commit `state`, then run `step` now, after `delay` ms, or at `runAt`. */
export interface NextResult<State = unknown, K extends string = string> {
  /** The kind of outcome. */
  type: "next";
  /** The step to run next. */
  step: K;
  /** The state that would be committed: the new one, validated, or the input state when the step kept it. */
  state: State;
  /** Milliseconds (a `"5m"` given to the step is reported as 300000). */
  delay?: number;
  /** The time given as `runAt`. */
  runAt?: Date;
  /** The priority given to `ctx.next`. */
  priority?: number;
}

/** `ctx.await(...)`: park until `spec` is satisfied, then run `step`; on timeout run `onTimeout`. */
export interface AwaitResult<State = unknown, K extends string = string> {
  /** The kind of outcome. */
  type: "await";
  /** As the step wrote it. */
  spec: AwaitSpec;
  /** The step to run once `spec` is satisfied. */
  step: K;
  /** The state that would be committed (as in {@link NextResult}). */
  state: State;
  /** Milliseconds. */
  timeout?: number;
  /** The deadline given as `until`. */
  until?: Date;
  /** The step to run when `timeout` or `until` passes first. */
  onTimeout?: K;
}

/** A child of `ctx.spawn`, validated as the engine would insert it. */
export interface SpawnedChild {
  /** The name of its machine. */
  machine: string;
  /** The child's validated state (machines) ... */
  state?: unknown;
  /** ... or args (jobs). */
  args?: unknown;
  /** Its queue: the one given, else its machine's. */
  queue: string;
  /** Its priority (default 0). */
  priority: number;
  /** Milliseconds. */
  delay?: number;
  /** The time given as `runAt`. */
  runAt?: Date;
  /** The `maxAttempts` given. */
  maxAttempts?: number;
  /** The correlation key given. */
  correlationKey?: string;
  /** Its concurrency key: the one given, else its machine's `concurrency.key`. */
  concurrencyKey?: string;
}

/** `ctx.spawn(...)`: insert `children`, park until all are terminal, then run `step`. */
export interface SpawnResult<State = unknown, K extends string = string> {
  /** The kind of outcome. */
  type: "spawn";
  /** The children that would be inserted, in order. */
  children: SpawnedChild[];
  /** The step to run once they are terminal (the join). */
  step: K;
  /** The state that would be committed (as in {@link NextResult}). */
  state: State;
}

/** `ctx.done(result)`, or what a job's `perform` returned. `result` is as stored: JSON, `undefined` became `null`. */
export interface DoneResult {
  /** The kind of outcome. */
  type: "done";
  /** The result, as it would be stored. */
  result: unknown;
}

/** `ctx.snooze(delay)`: the same step again after `delay` ms; not a failure. */
export interface SnoozeResult {
  /** The kind of outcome. */
  type: "snooze";
  /** Milliseconds. */
  delay: number;
}

/** `ctx.cancel(reason)`: terminal `cancelled`. `reason` is the message the engine records. */
export interface CancelResult {
  /** The kind of outcome. */
  type: "cancel";
  /** The reason the step gave; without one, `cancelled by step "<step>" of machine "<machine>"`. */
  reason: string;
}

/**
 * The attempt failed: the step threw (or timed out), or returned something
 * that is not a valid outcome, or a new state its schema rejects.
 */
export interface ErrorResult {
  /** The kind of outcome. */
  type: "error";
  /** What was thrown, e.g. your own Error, or the engine's ValidationError. */
  error: unknown;
  /** The error as the engine would store it on the instance and in its history. */
  record: ErrorRecord;
  /** Whether the engine would run another attempt (`attempt` < maxAttempts). */
  willRetry: boolean;
  /** When willRetry: the backoff before the next attempt, in ms (a sample, when the backoff has jitter). */
  retryDelay?: number;
  /** When the engine would run the step's onFailure step next (with ctx.failure): its name. */
  routedTo?: string;
}

/** What `runStep` returns: the outcome the step returned (with what it published), or the failed attempt. */
export type StepResult<State = unknown, K extends string = string> =
  | ((
      NextResult<State, K> | AwaitResult<State, K> | SpawnResult<State, K> | DoneResult | SnoozeResult | CancelResult
    ) & {
      /** What the step published with `ctx.publish`, when it did: the engine would commit it with the outcome. */
      published?: Record<string, unknown>;
    })
  | ErrorResult;

/** A signal for `ctx.awaited`; `id` and `insertedAt` are made up when omitted. */
export interface AwaitedInput {
  /** The event name. */
  event: string;
  /** The payload, as JSON would carry it. Default null. */
  payload?: unknown;
  /** The signal's id. Default: its 1-based position in `awaited`. */
  id?: string;
  /** When it was stored. Default: now. */
  insertedAt?: Date;
}

/** A child for `ctx.children` on a join step. */
export interface ChildInput {
  /** The child's machine, or its name. */
  machine: AnyMachine | string;
  /** How it finished. */
  status: "done" | "failed" | "cancelled";
  /** Its result (when `done`). Default null. */
  result?: unknown;
  /** An error record ({ name, message, ... }), or an Error that is turned into one. */
  error?: unknown;
  /** The child's id. Default: its position in `children` plus 2 (the parent is "1"). */
  id?: string;
}

/** The options of `runStep` that set up the step's context, for machines and jobs alike. */
export interface RunStepCommonOptions {
  /** `ctx.awaited`: the signals consumed by the await that led to this step. Default []. */
  awaited?: readonly AwaitedInput[];
  /** `ctx.children`: the children of a join step. Default []. */
  children?: readonly ChildInput[];
  /** `ctx.attempt`, from 1 to the step's maxAttempts. Default 1. */
  attempt?: number;
  /** `ctx.correlationKey`. Default null. */
  correlationKey?: string | null;
  /** `ctx.id`. Default "1". */
  id?: string;
  /** `ctx.insertedAt`. Default: now. */
  insertedAt?: Date;
  /**
   * For a transactional step: `ctx.client`. It must be inside a transaction
   * (BEGIN first); the step runs in a savepoint that is rolled back when the
   * attempt fails, as the engine would roll its transaction back. You decide
   * whether the transaction commits (usually: roll it back after the test).
   */
  client?: pg.ClientBase;
  /** Receives `ctx.log` output (pino-style). Default: silent. */
  logger?: Logger;
  /** `ctx.now()`. Default: the time of the call. */
  now?: Date;
  /** `ctx.resumedBy`: how the await that led to this step ended. Default undefined. */
  resumedBy?: "signal" | "timeout";
  /** `ctx.failure`, as in an onFailure step (its `error`: an Error or a stored error record). */
  failure?: {
    /** The last attempt's error. */
    error: Error | ErrorRecord;
    /** The step that failed. */
    step: string;
    /** The attempts it made. */
    attempts: number;
  };
  /** `ctx.cancellation`, as in an onCancel step (the engine ends the instance cancelled whatever it returns). */
  cancellation?: {
    /** The reason given to engine.cancel. */
    reason: string;
  };
}

type Out<M> = M extends Machine<infer S, string, "machine" | "job"> ? StandardSchemaV1.InferOutput<S> : unknown;
type In<M> = M extends Machine<infer S, string, "machine" | "job"> ? StandardSchemaV1.InferInput<S> : unknown;
/** The step names of a machine (a job has one: "perform"). */
export type StepName<M> = M extends Machine<StandardSchemaV1, infer K, "machine" | "job"> ? K : string;

/** `{ state }` for a machine, `{ args }` for a job, plus the context options. */
export type RunStepOptions<M extends AnyMachine> = RunStepCommonOptions &
  (M extends Machine<StandardSchemaV1, string, "job">
    ? {
        /** The job's args, checked by its schema. */
        args: In<M>;
      }
    : M extends Machine<StandardSchemaV1, string, "machine">
      ? {
          /** `ctx.state`: the instance's state before the step, checked by the machine's schema. */
          state: In<M>;
        }
      : {
          /** The state of a machine. */
          state?: unknown;
          /** The args of a job. */
          args?: unknown;
        });

const OPTION_KEYS = [
  "state",
  "args",
  "awaited",
  "children",
  "attempt",
  "correlationKey",
  "id",
  "insertedAt",
  "client",
  "logger",
  "now",
  "resumedBy",
  "failure",
  "cancellation",
];
const SAVEPOINT = "gen_durable_run_step";

/**
 * Runs `step` of `machine` once, as the engine would run that attempt, and
 * returns its outcome as plain data. Rejects (ValidationError) only on bad
 * input to runStep itself; everything the step does wrong is an `error` result.
 */
export async function runStep<M extends AnyMachine>(
  machine: M,
  step: StepName<M>,
  options: RunStepOptions<M>,
): Promise<StepResult<Out<M>, StepName<M>>> {
  const input = await checkInput(machine, step, options);
  const { resolved, client } = input;
  const abort = new StepAbort();
  const published = new Map<string, unknown>();
  const ctx = makeContext(machine, input, abort, { published });

  if (client) {
    try {
      await client.query(`savepoint ${SAVEPOINT}`);
    } catch (error) {
      if ((error as { code?: unknown }).code === "25P01") {
        throw new ValidationError(
          `runStep: client must be inside a transaction (run BEGIN on it first, and ROLLBACK after the test)`,
        );
      }
      throw error;
    }
  }
  const attempt: Attempt = { ...attemptFor(machine, input), published };
  let result: StepResult;
  try {
    // As the executor runs it: abandoned, not killed, on timeout.
    const returned = await invokeStep(machine.name, resolved, abort, () => resolved.run(ctx));
    result = await toResult(attempt, input, returned);
    if (published.size > 0) result = { ...result, published: Object.fromEntries(published) } as StepResult;
  } catch (thrown) {
    const { error, willRetry, delayMs, completion } = judgeThrow(attempt, thrown);
    result = {
      type: "error",
      error: thrown,
      record: error,
      willRetry,
      ...(willRetry ? { retryDelay: delayMs } : {}),
      ...(completion.outcome === "on_failure" ? { routedTo: completion.step! } : {}),
    };
  }
  if (client) {
    // As in the engine, a failed attempt's writes through ctx.client do not survive it.
    const end = result.type === "error" ? `rollback to savepoint ${SAVEPOINT}` : `release savepoint ${SAVEPOINT}`;
    await client.query(end);
  }
  return result as StepResult<Out<M>, StepName<M>>;
}

interface CheckedInput {
  resolved: ResolvedStep;
  state: unknown;
  attempt: number;
  maxAttempts: number;
  awaited: ReceivedSignal[];
  children: ChildOutcome[];
  correlationKey: string | null;
  id: string;
  insertedAt: Date;
  client: pg.ClientBase | undefined;
  logger: Logger;
  now: Date | undefined;
  resumedBy: "signal" | "timeout" | undefined;
  failure: { error: ErrorRecord; step: string; attempts: number } | undefined;
  cancellation: { reason: string } | undefined;
}

async function checkInput(
  machine: AnyMachine,
  step: unknown,
  options: RunStepCommonOptions & { state?: unknown; args?: unknown },
): Promise<CheckedInput> {
  const bad = (m: string) => new ValidationError(`runStep: ${m}`);
  const isMachine = typeof machine === "object" && machine !== null && machine.steps instanceof Map;
  if (!isMachine || !isStandardSchema(machine.schema)) {
    throw bad(`the first argument must be a machine from defineMachine or defineJob, got ${describe(machine)}`);
  }
  const steps = [...machine.steps.keys()];
  const resolved = typeof step === "string" ? machine.steps.get(step) : undefined;
  if (!resolved) {
    const hint = typeof step === "string" ? didYouMean(step, steps) : "";
    throw bad(`machine "${machine.name}" has no step ${describe(step)}${hint}; its steps: ${steps.join(", ")}`);
  }
  if (typeof options !== "object" || options === null) {
    const example = machine.kind === "job" ? "args" : "state";
    throw bad(`options must be an object such as { ${example}: ... }, got ${describe(options)}`);
  }
  rejectUnknownKeys(options, OPTION_KEYS, "runStep", (m) => new ValidationError(m));

  const isJob = machine.kind === "job";
  const key = isJob ? "args" : "state";
  if (isJob && "state" in options) throw bad(`${machine.name} is a job: pass { args }, not { state }`);
  if (!isJob && "args" in options) throw bad(`${machine.name} is a machine: pass { state }, not { args }`);
  const label = `runStep: ${key} of ${machine.name}`;
  const { value: validated } = await validate(machine.schema, isJob ? options.args : options.state, label);
  // The engine hands a step its state as stored, i.e. JSON: a Date in the state arrives as a string.
  const state = fromJson(encodeJson(validated ?? null, label, DEFAULTS.maxPayloadBytes));

  const maxAttempts = attemptLimit(machine, resolved, null);
  const attempt = options.attempt ?? 1;
  if (typeof attempt !== "number" || !Number.isInteger(attempt) || attempt < 1 || attempt > maxAttempts) {
    throw bad(
      `attempt must be an integer from 1 to the step's maxAttempts (${maxAttempts}), got ${describe(options.attempt)}`,
    );
  }
  const correlationKey =
    options.correlationKey === undefined || options.correlationKey === null
      ? null
      : checkKey(options.correlationKey, "runStep: correlationKey", (m) => new ValidationError(m));
  const id = options.id ?? "1";
  if (typeof id !== "string" || id.length === 0) {
    throw bad(`id must be a non-empty string, got ${describe(options.id)}`);
  }
  const insertedAt = options.insertedAt ?? new Date();
  if (!(insertedAt instanceof Date) || Number.isNaN(insertedAt.getTime())) {
    throw bad(`insertedAt must be a valid Date, got ${describe(options.insertedAt)}`);
  }

  const client = options.client;
  if (client !== undefined) {
    if (typeof client !== "object" || client === null || typeof (client as { query?: unknown }).query !== "function") {
      throw bad(`client must be a pg client (pool.connect()), got ${describe(client)}`);
    }
    if (!resolved.transactional) {
      throw bad(
        `step "${resolved.name}" of machine "${machine.name}" is not transactional, so the engine gives it ` +
          `no ctx.client; drop client, or declare the step { run, transactional: true }`,
      );
    }
  }
  const logger = options.logger ?? silentLogger;
  for (const level of ["debug", "info", "warn", "error"] as const) {
    if (typeof (logger as unknown as Record<string, unknown>)[level] !== "function") {
      throw bad(`logger must have debug, info, warn and error methods (pino-style); ${level} is missing`);
    }
  }
  return {
    resolved,
    state,
    attempt,
    maxAttempts,
    awaited: checkAwaited(options.awaited, bad),
    children: checkChildren(options.children, bad),
    correlationKey,
    id,
    insertedAt,
    client,
    logger,
    ...checkRouting(options, bad),
  };
}

/** The clock and routing facts a test may give a step (ctx.now(), resumedBy, failure, cancellation). */
function checkRouting(options: RunStepCommonOptions, bad: (m: string) => Error) {
  const { now, resumedBy, failure, cancellation } = options;
  if (now !== undefined && (!(now instanceof Date) || Number.isNaN(now.getTime()))) {
    throw bad(`now must be a valid Date, got ${now instanceof Date ? "Invalid Date" : describe(now)}`);
  }
  if (resumedBy !== undefined && resumedBy !== "signal" && resumedBy !== "timeout") {
    throw bad(`resumedBy must be "signal" or "timeout", got ${describe(resumedBy)}`);
  }
  if (
    failure !== undefined &&
    (typeof failure !== "object" ||
      failure === null ||
      typeof failure.step !== "string" ||
      typeof failure.attempts !== "number" ||
      typeof failure.error !== "object" ||
      failure.error === null)
  ) {
    throw bad(`failure must be { error, step, attempts }, got ${describe(failure)}`);
  }
  if (cancellation !== undefined && (typeof cancellation !== "object" || typeof cancellation?.reason !== "string")) {
    throw bad(`cancellation must be { reason }, got ${describe(cancellation)}`);
  }
  return {
    now,
    resumedBy,
    failure:
      failure === undefined
        ? undefined
        : {
            error: failure.error instanceof Error ? toErrorRecord(failure.error) : failure.error,
            step: failure.step,
            attempts: failure.attempts,
          },
    cancellation: cancellation === undefined ? undefined : { reason: cancellation.reason },
  };
}

function checkAwaited(awaited: unknown, bad: (m: string) => Error): ReceivedSignal[] {
  if (awaited === undefined) return [];
  if (!Array.isArray(awaited)) throw bad(`awaited must be an array of { event, payload? }, got ${describe(awaited)}`);
  return awaited.map((signal: unknown, i) => {
    const where = `awaited[${i}]`;
    if (typeof signal !== "object" || signal === null) {
      throw bad(`${where} must be { event, payload? }, got ${describe(signal)}`);
    }
    const keys = ["event", "payload", "id", "insertedAt"];
    rejectUnknownKeys(signal, keys, `runStep: ${where}`, (m) => new ValidationError(m));
    const s = signal as AwaitedInput;
    checkName(s.event, `${where}.event`, bad);
    const payload = fromJson(encodeJson(s.payload ?? null, `runStep: ${where}.payload`, DEFAULTS.maxPayloadBytes));
    const insertedAt = s.insertedAt ?? new Date();
    if (!(insertedAt instanceof Date) || Number.isNaN(insertedAt.getTime())) {
      throw bad(`${where}.insertedAt must be a valid Date, got ${describe(s.insertedAt)}`);
    }
    if (s.id !== undefined && (typeof s.id !== "string" || s.id.length === 0)) {
      throw bad(`${where}.id must be a non-empty string, got ${describe(s.id)}`);
    }
    return { id: s.id ?? String(i + 1), event: s.event, payload, insertedAt };
  });
}

function checkChildren(children: unknown, bad: (m: string) => Error): ChildOutcome[] {
  if (children === undefined) return [];
  if (!Array.isArray(children)) {
    throw bad(`children must be an array of { machine, status, result?, error? }, got ${describe(children)}`);
  }
  return children.map((child: unknown, i) => {
    const where = `children[${i}]`;
    if (typeof child !== "object" || child === null) {
      throw bad(`${where} must be { machine, status, result?, error? }, got ${describe(child)}`);
    }
    const keys = ["machine", "status", "result", "error", "id"];
    rejectUnknownKeys(child, keys, `runStep: ${where}`, (m) => new ValidationError(m));
    const c = child as ChildInput;
    const machine = typeof c.machine === "string" ? c.machine : (c.machine as { name?: unknown } | null)?.name;
    checkName(machine, `${where}.machine (a machine or its name)`, bad);
    // A join runs once every child is terminal: a live child cannot be in ctx.children.
    if (!isTerminal(c.status)) {
      throw bad(
        `${where}.status must be "done", "failed" or "cancelled" (a join sees terminal children only), ` +
          `got ${describe(c.status)}`,
      );
    }
    if (c.id !== undefined && (typeof c.id !== "string" || c.id.length === 0)) {
      throw bad(`${where}.id must be a non-empty string, got ${describe(c.id)}`);
    }
    const result = fromJson(encodeJson(c.result ?? null, `runStep: ${where}.result`, DEFAULTS.maxPayloadBytes));
    const error =
      c.error === undefined || c.error === null
        ? null
        : c.error instanceof Error
          ? toErrorRecord(c.error)
          : fromJson(encodeJson(c.error, `runStep: ${where}.error`, DEFAULTS.maxPayloadBytes));
    return { id: c.id ?? String(i + 2), machine: machine as string, status: c.status, result, error };
  });
}

function makeContext(
  machine: AnyMachine,
  input: CheckedInput,
  abort: StepAbort,
  publishTo: { published?: Map<string, unknown> },
): StepContext<unknown, unknown, string> {
  const { resolved } = input;
  const ctx = createContext({
    publishTo,
    id: input.id,
    machine: machine.name,
    step: resolved.name,
    state: input.state,
    attempt: input.attempt,
    maxAttempts: input.maxAttempts,
    resumedBy: input.resumedBy,
    failure: input.failure,
    cancellation: input.cancellation,
    now: () => input.now ?? new Date(),
    awaited: input.awaited,
    children: input.children,
    correlationKey: input.correlationKey,
    insertedAt: input.insertedAt,
    abort,
    logger: input.logger,
    client: input.client,
  });
  if (input.client || !resolved.transactional) return ctx;
  // The engine's message ("declare the step transactional") would mislead here: the step is; the test gave no client.
  const descriptors: PropertyDescriptorMap = Object.getOwnPropertyDescriptors(ctx);
  descriptors.abortSignal = { enumerable: true, get: () => abort.signal };
  descriptors.log = { enumerable: true, get: () => ctx.log };
  descriptors.client = {
    enumerable: true,
    get() {
      throw new ValidationError(
        `runStep: step "${resolved.name}" of machine "${machine.name}" used ctx.client, but runStep got no client: ` +
          `pass { client }, a pg client inside a transaction you roll back`,
      );
    },
  };
  return Object.freeze(Object.defineProperties({}, descriptors)) as StepContext<unknown, unknown, string>;
}

/** The attempt the engine would judge: the claimed row as it would read for this input. */
function attemptFor(machine: AnyMachine, input: CheckedInput): Attempt {
  const row: ClaimedRow = {
    id: input.id,
    machine: machine.name,
    step: input.resolved.name,
    state: input.state,
    attempt: input.attempt,
    max_attempts: null,
    claim_token: "1",
    correlation_key: input.correlationKey,
    awaited: null,
    joined: input.children.length > 0,
    parent_id: null,
    inserted_ms: input.insertedAt.getTime(),
    queue: machine.queue,
    error: null,
    concurrency_key: null,
    rate_limited: null,
    claimed_ahead: false,
    trace_context: null,
    version: machine.version,
    // Routed once already: a failure now ends the instance failed, as in the engine.
    failure: input.failure ?? null,
    resumed_by: input.resumedBy ?? null,
  };
  return { row, machine, step: input.resolved, maxAttempts: input.maxAttempts, started: performance.now() };
}

/** The judge's row update for what the step returned, as plain data; throws what judgeReturn throws. */
async function toResult(attempt: Attempt, input: CheckedInput, returned: unknown): Promise<StepResult> {
  const completion = await judgeReturn(attempt, returned, DEFAULTS.maxPayloadBytes);
  const data = readOutcome(attempt, returned);
  const newState = () => (completion.set_state ? fromJson(JSON.stringify(completion.state)) : input.state);
  const ms = (value: number | null, key: string) => (value === null ? {} : { [key]: value });
  switch (data.kind) {
    case "next":
      return {
        type: "next",
        step: completion.step!,
        state: newState(),
        ...ms(completion.delay_ms, "delay"),
        ...(completion.run_at === null ? {} : { runAt: new Date(completion.run_at) }),
        ...ms(completion.priority, "priority"),
      };
    case "await":
      return {
        type: "await",
        spec: data.spec,
        step: completion.step!,
        state: newState(),
        ...(data.options.timeout === undefined
          ? {}
          : { timeout: completion.delay_ms!, onTimeout: data.options.onTimeout! }),
        ...(data.options.until === undefined
          ? {}
          : { until: new Date(completion.run_at!), onTimeout: data.options.onTimeout! }),
      };
    case "spawn":
      return {
        type: "spawn",
        children: (completion.spawn ?? []).map((row, i) => {
          const spec = data.children[i] as { machine: AnyMachine };
          const state = fromJson(row.state);
          return {
            machine: row.machine,
            ...(spec.machine.kind === "job" ? { args: state } : { state }),
            queue: row.queue,
            priority: row.priority,
            ...ms(row.delay_ms, "delay"),
            ...(row.run_at === null ? {} : { runAt: new Date(row.run_at) }),
            ...ms(row.max_attempts, "maxAttempts"),
            ...(row.correlation_key === null ? {} : { correlationKey: row.correlation_key }),
            ...(row.concurrency_key === null ? {} : { concurrencyKey: row.concurrency_key }),
          };
        }),
        step: completion.step!,
        state: newState(),
      };
    case "done":
      return { type: "done", result: fromJson(JSON.stringify(completion.result ?? null)) };
    case "snooze":
      return { type: "snooze", delay: completion.delay_ms! };
    case "cancel":
      return { type: "cancel", reason: (completion.error as ErrorRecord).message };
  }
}

function fromJson(text: string): unknown {
  return JSON.parse(text) as unknown;
}
