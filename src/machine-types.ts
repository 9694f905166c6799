/**
 * Type-level helpers that carry a machine's types across its edges: signal
 * payloads, results, child specs and instance ids. Types only (plus one symbol),
 * so every module may import them without a cycle.
 */
import type pg from "pg";
import type { AnyMachine, InstanceOptions, Machine } from "./define.js";
import type { Instance } from "./instance.js";
import type { StandardSchemaV1 } from "./schema.js";

/** A machine's declared signals: event name -> payload schema. */
export type SignalSchemas = Record<string, StandardSchemaV1>;

type In<S> = S extends StandardSchemaV1 ? StandardSchemaV1.InferInput<S> : never;
type Out<S> = S extends StandardSchemaV1 ? StandardSchemaV1.InferOutput<S> : never;
type IsAny<T> = 0 extends 1 & T ? true : false;

/** Event name -> payload type (the schema's output), from a machine's `signals`. */
export type PayloadsOf<Sig extends SignalSchemas> = { [E in keyof Sig & string]: Out<Sig[E]> };
/** Event name -> what a sender passes (the schema's input). */
export type PayloadInputsOf<Sig extends SignalSchemas> = { [E in keyof Sig & string]: In<Sig[E]> };

/** A signal consumed by an await, as seen in `ctx.awaited`: narrowed by `event` when the machine declares signals. */
export interface ReceivedSignal<E extends string = string, P = unknown> {
  /** The signal's id. */
  id: string;
  /** Its event name. */
  event: E;
  /** Its payload (the schema's output when the event declares one). */
  payload: P;
  /** When it was stored. */
  insertedAt: Date;
}

/** The union of received signals, one member per declared event. */
export type ReceivedOf<Payloads extends Record<string, unknown>> = {
  [E in keyof Payloads & string]: ReceivedSignal<E, Payloads[E]>;
}[keyof Payloads & string];

/** The state type of a machine (its schema's output); unknown for an untyped machine. */
export type StateOf<M> =
  IsAny<M> extends true ? unknown : M extends Machine<infer S, string, "machine" | "job"> ? Out<S> : unknown;

/** The result type of a machine or job: its `result` schema's output, a job's return value, else unknown. */
export type ResultOf<M> =
  IsAny<M> extends true
    ? unknown
    : M extends Machine<StandardSchemaV1, string, "machine" | "job", SignalSchemas, infer R>
      ? IsAny<R> extends true
        ? unknown
        : R
      : unknown;

/** What `ctx.done(result)` takes: the `result` schema's input. */
export type ResultInOf<RS> = RS extends StandardSchemaV1 ? In<RS> : unknown;

declare const MACHINE: unique symbol;

/**
 * An instance id that remembers its machine: a plain string at run time (the
 * id as today), typed for `engine.wait`, `engine.get` and `ctx.childrenOf`.
 */
export type InstanceId<M extends AnyMachine = AnyMachine> = string & {
  /** Type-only brand: the machine the id belongs to; never set at run time. */
  readonly [MACHINE]?: M;
};

/** A child's outcome, as seen in `ctx.children` on a join; `ctx.childrenOf(M)` types `result` by M. */
export interface ChildOutcome<M extends AnyMachine = AnyMachine> {
  /** The child's id. */
  id: InstanceId<M>;
  /** The name of its machine. */
  machine: string;
  /** How it finished: done, failed or cancelled. */
  status: string;
  /** Its result when `done`, else null. */
  result: ResultOf<M> | null;
  /** Its error when it failed (or was cancelled), else null. */
  error: unknown;
}

/** `{ state }` for a machine, `{ args }` for a job (optional when the job declares no args), checked by its schema. */
export type InputOf<M> =
  IsAny<M> extends true
    ? { state?: unknown; args?: unknown }
    : M extends Machine<infer S, string, "job">
      ? undefined extends In<S>
        ? { args?: In<S> }
        : { args: In<S> }
      : M extends Machine<infer S, string, "machine">
        ? { state: In<S> }
        : { state?: unknown; args?: unknown };

/** A child for `ctx.spawn`: a machine with its `state`, or a job with its `args`. */
export type ChildSpec<M extends AnyMachine = AnyMachine> = InstanceOptions & {
  /** The machine (or job) of the child. */
  machine: M;
} & InputOf<M>;

/** Any child or insertMany item, before it is checked against its machine. */
export type AnySpec = InstanceOptions & { machine: AnyMachine; state?: unknown; args?: unknown };

/** Each child (`ctx.spawn`) or item (`insertMany`) checked against its own machine: `state`/`args` must match. */
export type CheckedSpecs<T> = { readonly [I in keyof T]: SpecFor<T[I]> };
type SpecFor<X> = X extends { machine: infer M extends AnyMachine } ? ChildSpec<M> : ChildSpec;

/** The machines of a list of specs. */
export type MachinesOf<T extends readonly AnySpec[]> = T[number]["machine"];

/** `{ state }` for a machine, `{ args }` for a job, plus the common options. */
export type InsertOptions<M extends AnyMachine> = InstanceOptions & {
  /** A pg client inside your transaction: the instance exists (and runs) only if it commits. */
  client?: pg.ClientBase;
} & InputOf<M>;

/** The options argument of `engine.insert`: optional when the machine needs no input (a job without args). */
export type InsertArgs<M extends AnyMachine> =
  Partial<InputOf<M>> extends InputOf<M> ? [options?: InsertOptions<M>] : [options: InsertOptions<M>];

/** What `engine.wait` / `engine.get` take: an id (typed or not) or a handle `{ id }`. */
export type InstanceRef<M extends AnyMachine = AnyMachine> =
  | InstanceId<M>
  | {
      /** The instance's id. */
      readonly id: InstanceId<M>;
    };

type MachineOfId<I> = I extends { readonly [MACHINE]?: infer M } ? (M extends AnyMachine ? M : never) : never;
/** The machine an id or handle remembers (never when it is a plain string). */
export type MachineOfRef<R> = R extends { readonly id: infer I } ? MachineOfId<I> : MachineOfId<R>;

/** The instance `wait` / `get` resolve to: typed by the machine its id remembers, else unknown state and result. */
export type InstanceOf<R> = [MachineOfRef<R>] extends [never]
  ? Instance
  : MachineOfRef<R> extends infer M
    ? M extends AnyMachine
      ? Instance<StateOf<M>, ResultOf<M>>
      : never
    : never;
