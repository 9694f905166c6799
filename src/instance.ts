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

export interface Instance<State = unknown, Result = unknown> {
  id: string;
  machine: string;
  status: Status;
  step: string;
  state: State;
  attempt: number;
  /** Set once `done` (null before). */
  result: Result | null;
  error: ErrorRecord | null;
  queue: string;
  priority: number;
  runAt: Date;
  correlationKey: string | null;
  concurrencyKey: string | null;
  parentId: string | null;
  /** The version of its machine's definition that wrote its state. */
  version: number;
  insertedAt: Date;
  updatedAt: Date;
  /** The values its steps published (ctx.publish), by key; {} when none. */
  published: Record<string, unknown>;
}

export interface Transition {
  at: Date;
  fromStep: string | null;
  toStep: string | null;
  outcome: string;
  attempt: number;
  durationMs: number | null;
  error?: ErrorRecord;
  /** On a `published` transition: the values the step `fromStep` published with its outcome. */
  published?: Record<string, unknown>;
}

/** One item of `insertMany`: a machine with its `state`, or a job with its `args`, checked against it. */
export type InsertManyItem<M extends AnyMachine = AnyMachine> = { machine: M } & InstanceOptions & InputOf<M>;

/** The handle `insert` returns: `id` is a plain string that remembers its machine for `wait` and `get`. */
export interface InsertResult<M extends AnyMachine = AnyMachine> {
  id: InstanceId<M>;
  /** false when a live instance with the same correlation key existed: `id` is that instance. */
  inserted: boolean;
}

export interface SignalOptions {
  /** A pg client inside your transaction: the signal exists (and wakes its instance) only if it commits. */
  client?: pg.ClientBase;
  /** A second signal with this key to the same instance is accepted and stored once. */
  dedupKey?: string;
  /** "keep": hold a signal for a correlation key with no live instance until one is inserted. Default "error". */
  ifMissing?: "error" | "keep";
}

export interface SignalResult {
  /** The stored signal, or null when `dedupKey` had been seen. */
  signalId: string | null;
  /** The instance it was delivered to; null when kept in the key's inbox. */
  instanceId: string | null;
  duplicate: boolean;
}

export interface ListFilter {
  machine?: string;
  status?: Status | Status[];
  queue?: string;
  correlationKey?: string;
  limit?: number;
  /** Page: instances older than this id. */
  after?: string;
}
