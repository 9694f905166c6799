/**
 * The public types of the client API (engine.insert, signal, get, list,
 * history): what goes in and what comes back. Types only, so any module
 * (explain, the CLI) can use them without importing the engine.
 */
import type pg from "pg";
import type { AnyMachine, InstanceOptions, Machine } from "./define.js";
import type { ErrorRecord } from "./json.js";
import type { StandardSchemaV1 } from "./schema.js";
import type { Status } from "./status.js";

/** An instance as `engine.get`, `list` and `wait` return it: its row, read at one moment. */
export interface Instance<State = unknown> {
  /** Its id (a bigint, as a string). */
  id: string;
  /** The name of its machine or job. */
  machine: string;
  /** Where it is: live (`runnable`, `running`, `awaiting`, `joining`) or terminal (`done`, `failed`, `cancelled`). */
  status: Status;
  /** The step it is at (the step that ended it, once terminal); `perform` for a job. */
  step: string;
  /** The last committed state (a job's args). */
  state: State;
  /** Attempts of the current step so far (0 before its first); reset when it moves to another step. */
  attempt: number;
  /** What `ctx.done` returned (a job's return value); null until done. */
  result: unknown;
  /** The last failed attempt's error, or the cancel's reason (`name: "Cancelled"`); null when none. */
  error: ErrorRecord | null;
  /** The queue its steps run on. */
  queue: string;
  /** Lower runs first among due instances of its queue. Default 0. */
  priority: number;
  /** When it is due (runnable), or when its await times out (awaiting; never, without a timeout). */
  runAt: Date;
  /** Its business key, unique among live instances; addresses signals. */
  correlationKey: string | null;
  /** Steps of instances sharing this key never run at the same time. */
  concurrencyKey: string | null;
  /** The instance that spawned it, for a child. */
  parentId: string | null;
  /** When it was inserted (database time). */
  insertedAt: Date;
  /** When its row last changed (database time). */
  updatedAt: Date;
  /** The values its steps published (ctx.publish), by key; {} when none. */
  published: Record<string, unknown>;
}

/** One entry of `engine.history(id)`: a committed outcome, a failed attempt, a resume or a publish. */
export interface Transition {
  /** When it was committed (database time). */
  at: Date;
  /** The step that ran; null for the entry of an insert. */
  fromStep: string | null;
  /** The step that runs next; null when the instance ended (or for a publish). */
  toStep: string | null;
  /** What happened: `next`, `await`, `resumed`, `timeout`, `spawn`, `joined`, `done`, `error`, `failed`, `published`, … */
  outcome: string;
  /** The attempt of `fromStep` that produced it. */
  attempt: number;
  /** How long the step's code ran, in milliseconds; null where no code ran (a resume, a join). */
  durationMs: number | null;
  /** The error of a failed attempt, or the reason of a cancel. */
  error?: ErrorRecord;
  /** On a `published` transition: the values the step `fromStep` published with its outcome. */
  published?: Record<string, unknown>;
}

type In<S> = S extends StandardSchemaV1 ? StandardSchemaV1.InferInput<S> : never;

/** `{ state }` for a machine, `{ args }` for a job, plus the common options. */
export type InsertOptions<M extends AnyMachine> = InstanceOptions & {
  /** A pg client inside your transaction: the instance exists (and runs) only if it commits. */
  client?: pg.ClientBase;
} & (M extends Machine<infer S, string, "job">
    ? {
        /** The job's arguments, validated by its `args` schema. */
        args: In<S>;
      }
    : M extends Machine<infer S, string, "machine">
      ? {
          /** The initial state, validated by the machine's `state` schema. */
          state: In<S>;
        }
      : {
          /** The initial state, for a machine. */
          state?: unknown;
          /** The arguments, for a job. */
          args?: unknown;
        });

/** One instance of `engine.insertMany`: its machine or job, its state or args, and its insert options. */
export type InsertManyItem = {
  /** The machine or job to insert. */
  machine: AnyMachine;
} & InstanceOptions & {
    /** The initial state, for a machine. */
    state?: unknown;
    /** The arguments, for a job. */
    args?: unknown;
  };

/** What an insert did. */
export interface InsertResult {
  /** The instance inserted, or the existing one its key led to. */
  id: string;
  /** false when an instance with the same correlation or idempotency key was returned instead: `id` is that one. */
  inserted: boolean;
}

/** Options of `engine.signal`. */
export interface SignalOptions {
  /** A pg client inside your transaction: the signal exists (and wakes its instance) only if it commits. */
  client?: pg.ClientBase;
  /** A second signal with this key to the same instance is accepted and stored once. */
  dedupKey?: string;
  /** "keep": hold a signal for a correlation key with no live instance until one is inserted. Default "error". */
  ifMissing?: "error" | "keep";
}

/** What `engine.signal` did. */
export interface SignalResult {
  /** The stored signal, or null when `dedupKey` had been seen. */
  signalId: string | null;
  /** The instance it was delivered to; null when kept in the key's inbox. */
  instanceId: string | null;
  /** true when the `dedupKey` had been seen: nothing was stored. */
  duplicate: boolean;
}

/** The filters of `engine.list`, combined with AND; newest first. */
export interface ListFilter {
  /** Only instances of this machine or job. */
  machine?: string;
  /** Only instances in this status (or these). */
  status?: Status | Status[];
  /** Only instances on this queue. */
  queue?: string;
  /** Only instances with this correlation key: the live one and the finished ones. */
  correlationKey?: string;
  /** At most this many, 1 to 10,000. Default 100. */
  limit?: number;
  /** Page: instances older than this id. */
  after?: string;
}
