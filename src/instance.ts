/**
 * The public types of the client API (engine.insert, signal, get, list,
 * history): what goes in and what comes back. Types only, so any module
 * (explain, the CLI) can use them without importing the engine.
 */
import type pg from "pg";
import type { AnyMachine, InstanceOptions } from "./define.js";
import type { ErrorRecord } from "./json.js";
import type { InputOf, InstanceId } from "./machine-types.js";
import type { Status } from "./status.js";

export type { InsertOptions } from "./machine-types.js";

/** One instance as `get` and `list` return it: its row, read in one snapshot. */
export interface Instance<State = unknown, Result = unknown> {
  /** Its id (a bigint, as a string). */
  id: string;
  /** The name of its machine. */
  machine: string;
  /** Where it is in its life: runnable, running, awaiting, joining, done, failed or cancelled. */
  status: Status;
  /** The step it is at (the last one it ran once finished). */
  step: string;
  /** Its state (a job's args), as last committed. */
  state: State;
  /** Attempts started at the current step; 0 before the first, reset by each transition. */
  attempt: number;
  /** Set once `done` (null before). */
  result: Result | null;
  /** The error of its last failed attempt (or of its cancel); null once a step commits an outcome. */
  error: ErrorRecord | null;
  /** The queue it runs on. */
  queue: string;
  /** Lower runs first among the due instances of its queue. */
  priority: number;
  /** When it is due to run next (or was last due). */
  runAt: Date;
  /** The key it is signalled by; at most one live instance holds it. */
  correlationKey: string | null;
  /** The key whose concurrency limit it counts against. */
  concurrencyKey: string | null;
  /** The instance that spawned it, null unless it is a child. */
  parentId: string | null;
  /** The version of its machine's definition that wrote its state. */
  version: number;
  /** When it was inserted. */
  insertedAt: Date;
  /** When its row last changed. */
  updatedAt: Date;
  /** The values its steps published (ctx.publish), by key; {} when none. */
  published: Record<string, unknown>;
}

/** One committed transition of an instance, as `history` returns them (oldest first). */
export interface Transition {
  /** When it was committed. */
  at: Date;
  /** The step it left. */
  fromStep: string | null;
  /** The step it went to; null when the instance finished. */
  toStep: string | null;
  /** What happened: next, done, error, snooze, failed, cancelled, resumed, retried, ... */
  outcome: string;
  /** The attempt of `fromStep` it ended. */
  attempt: number;
  /** How long the step ran, in milliseconds; null when no step ran. */
  durationMs: number | null;
  /** The error, on an error or failure. */
  error?: ErrorRecord;
  /** On a `published` transition: the values the step `fromStep` published with its outcome. */
  published?: Record<string, unknown>;
}

/** One item of `insertMany`: a machine with its `state`, or a job with its `args`, checked against it. */
export type InsertManyItem<M extends AnyMachine = AnyMachine> = {
  /** The machine (or job) to insert an instance of. */
  machine: M;
} & InstanceOptions &
  InputOf<M>;

/** The handle `insert` returns: `id` is a plain string that remembers its machine for `wait` and `get`. */
export interface InsertResult<M extends AnyMachine = AnyMachine> {
  /** The instance's id. */
  id: InstanceId<M>;
  /** false when a live instance with the same correlation key existed: `id` is that instance. */
  inserted: boolean;
}

/** Options of `signal`. */
export interface SignalOptions {
  /** A pg client inside your transaction: the signal exists (and wakes its instance) only if it commits. */
  client?: pg.ClientBase;
  /** A second signal with this key to the same instance is accepted and stored once. */
  dedupKey?: string;
  /** "keep": hold a signal for a correlation key with no live instance until one is inserted. Default "error". */
  ifMissing?: "error" | "keep";
}

/** What `signal` did with the signal. */
export interface SignalResult {
  /** The stored signal, or null when `dedupKey` had been seen. */
  signalId: string | null;
  /** The instance it was delivered to; null when kept in the key's inbox. */
  instanceId: string | null;
  /** true when a signal with the same `dedupKey` was already stored: this one was dropped. */
  duplicate: boolean;
}

/** What `list` returns: instances matching every field given, newest first. */
export interface ListFilter {
  /** Only instances of this machine. */
  machine?: string;
  /** Only instances with this status (or one of these). */
  status?: Status | Status[];
  /** Only instances on this queue. */
  queue?: string;
  /** Only instances with this correlation key. */
  correlationKey?: string;
  /** At most this many, from 1 to 10000. Default 100. */
  limit?: number;
  /** Page: instances older than this id. */
  after?: string;
}
