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
import { stepLogger, type Logger } from "../logger.js";
import { checkPublish } from "./published.js";
import type { StepAbort } from "./step-abort.js";
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
  /** What aborts the attempt: ctx.abortSignal is its signal. */
  abort: StepAbort;
  /** The engine's logger: ctx.log binds the step's id, machine, step and attempt to it. */
  logger: Logger;
  client: pg.ClientBase | undefined;
  /**
   * Where ctx.publish records values (its `published`, made on the first publish); the judge takes
   * them from there.
   */
  publishTo: { published?: Map<string, unknown> };
}

// The outcome helpers every ctx shares: they read nothing of the step they are called in.
const next = (step: string, ...rest: [unknown?, ScheduleOptions?]): unknown =>
  makeOutcome({
    kind: "next",
    step,
    state: rest[0],
    hasState: rest.length > 0 && rest[0] !== undefined,
    options: rest[1] ?? {},
  });
const awaitSignals = (spec: AwaitSpec, step: string, ...rest: [unknown?, AwaitOptions?]): unknown =>
  makeOutcome({
    kind: "await",
    spec,
    step,
    state: rest[0],
    hasState: rest.length > 0 && rest[0] !== undefined,
    options: rest[1] ?? {},
  });
const spawn = (children: readonly unknown[], step: string, ...rest: [unknown?, SpawnOptions?]): unknown =>
  makeOutcome({
    kind: "spawn",
    children: [...children],
    step,
    state: rest[0],
    hasState: rest.length > 0 && rest[0] !== undefined,
    ...(rest[1] === undefined ? {} : { options: rest[1] }),
    // Called in the step's code, where its span is active: the children's steps link to it.
    traceContext: captureTraceContext(),
  });
const done = (result?: unknown): unknown => makeOutcome({ kind: "done", result });
const snooze = (delay: Duration): unknown => makeOutcome({ kind: "snooze", delay });
const cancel = (reason?: string): unknown => makeOutcome({ kind: "cancel", reason });

export function createContext(input: ContextInput): StepContext<unknown, unknown, string> {
  return Object.freeze(new Context(input)) as unknown as StepContext<unknown, unknown, string>;
}

/**
 * ctx as a class: facts and outcome helpers are own properties (a step may destructure them), and
 * `client`, which throws outside a transactional step, `abortSignal` (see StepAbort) and `log`,
 * each made when first read (most steps never read them), are getters on the prototype. An object
 * literal with a getter, or one that spreads the facts and then adds properties, leaves V8's fast
 * path: built that way, ctx cost several microseconds per step and left an object slow to read.
 */
class Context {
  readonly id: string;
  readonly machine: string;
  readonly step: string;
  readonly state: unknown;
  readonly attempt: number;
  readonly maxAttempts: number;
  readonly resumedBy: "signal" | "timeout" | undefined;
  readonly failure: StepFailure | undefined;
  readonly cancellation: StepCancellation | undefined;
  readonly now: () => Date;
  readonly awaited: readonly ReceivedSignal[];
  readonly children: readonly ChildOutcome[];
  readonly correlationKey: string | null;
  readonly insertedAt: Date;
  readonly next: (step: string, ...rest: [unknown?, ScheduleOptions?]) => unknown;
  readonly await: (spec: AwaitSpec, step: string, ...rest: [unknown?, AwaitOptions?]) => unknown;
  readonly childrenOf: <M extends AnyMachine>(machine: M) => ChildOutcome<M>[];
  readonly spawn: (children: readonly unknown[], step: string, ...rest: [unknown?, SpawnOptions?]) => unknown;
  readonly publish: (key: string, value: unknown) => void;
  readonly done: (result?: unknown) => unknown;
  readonly snooze: (delay: Duration) => unknown;
  readonly cancel: (reason?: string) => unknown;
  readonly #client: pg.ClientBase | undefined;
  readonly #abort: StepAbort;
  readonly #logger: Logger;
  #log: StepLogger | undefined;

  constructor(input: ContextInput) {
    const { publishTo } = input;
    this.id = input.id;
    this.machine = input.machine;
    this.step = input.step;
    this.state = input.state;
    this.attempt = input.attempt;
    this.maxAttempts = input.maxAttempts;
    this.resumedBy = input.resumedBy;
    this.failure = input.failure;
    this.cancellation = input.cancellation;
    this.now = input.now;
    this.awaited = input.awaited;
    this.children = input.children;
    this.correlationKey = input.correlationKey;
    this.insertedAt = input.insertedAt;
    this.#abort = input.abort;
    this.#logger = input.logger;
    this.#client = input.client;
    // The outcome helpers that read nothing of this step are shared, not made for every step.
    this.next = next;
    this.await = awaitSignals;
    // Typed by the caller's machine: a child's result was checked by that machine's `result` schema.
    const { children, step, machine } = input;
    this.childrenOf = <M extends AnyMachine>(of: M) =>
      children.filter((child) => child.machine === of?.name) as unknown as ChildOutcome<M>[];
    this.spawn = spawn;
    this.publish = (key, value) => {
      const checked = checkPublish(key, value, `step "${step}" of machine "${machine}"`);
      (publishTo.published ??= new Map()).set(checked, value);
    };
    this.done = done;
    this.snooze = snooze;
    this.cancel = cancel;
  }

  get abortSignal(): AbortSignal {
    return this.#abort.signal;
  }

  get log(): StepLogger {
    return (this.#log ??= stepLogger(this.#logger, {
      id: this.id,
      machine: this.machine,
      step: this.step,
      attempt: this.attempt,
    }));
  }

  get client(): pg.ClientBase {
    if (!this.#client) {
      throw new ConfigError(
        "ctx.client is only available in transactional steps: " +
          `declare step "${this.step}" of machine "${this.machine}" as { run, transactional: true }`,
      );
    }
    return this.#client;
  }
}
