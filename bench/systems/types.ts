/**
 * The one interface every benchmarked system implements, so that main.ts runs
 * exactly the same scenario against each of them. A system owns one Postgres
 * schema and is driven through its own public API only; the harness reads the
 * database directly just to count finished jobs (never trusting callbacks).
 */

/** Called by a system's job handler as its first act, with the job's payload number. */
export type OnStart = (i: number) => void;

export interface Worker {
  /**
   * Enqueues one job through the worker's own instance (same pool, same
   * process), for the "same-node" latency figure.
   */
  enqueue(i: number): Promise<void>;
  /** Graceful stop; resolves when the system has released its connections for work. */
  stop(): Promise<void>;
}

export interface BenchSystem {
  /** Label used in the table and the JSON, e.g. "graphile-worker (batched)". */
  readonly name: string;
  /** Schema holding all of this system's tables. */
  readonly schema: string;
  /** The options used, verbatim, so the results say how each peer was configured. */
  readonly config: Record<string, unknown>;

  /** Installs the schema (the system's own migration) and opens the producer side. */
  setup(): Promise<void>;
  /** Deletes every job, so the next phase starts from an empty queue. */
  reset(): Promise<void>;
  /** Enqueues jobs `from .. from+count-1` in batches of `batchSize`, one bulk API call per batch, sequentially. */
  enqueueBulk(from: number, count: number, batchSize: number): Promise<void>;
  /** Enqueues one job `{ i }` through the single-job API (the caller supplies the client-side concurrency). */
  enqueueOne(i: number): Promise<void>;
  /** How many jobs the database says are finished (done / completed / deleted-on-completion). */
  countFinished(total: number): Promise<number>;
  /** Starts a worker running no-op jobs at `concurrency`; resolves once it is started. */
  startWorker(concurrency: number, onStart: OnStart): Promise<Worker>;
  /**
   * Starts a worker for the fan-out phase: a parent that spawns `children`
   * no-op children and a join that runs once, after the last of them finished
   * — natively where the system has it, built by hand from its public API
   * otherwise (`fanoutDescription` says which). Resolves once it is started.
   */
  startFanoutWorker(concurrency: number, hooks: FanoutHooks): Promise<FanoutWorker>;
  /** How the fan-out is built on this system, for the README-style notes in the JSON. */
  readonly fanoutDescription: string;
  /** Closes everything setup() opened. */
  teardown(): Promise<void>;
}

/** Called from the fan-out handlers as their first act. */
export interface FanoutHooks {
  /** First line of a child's handler, with the child's number. */
  onChild(i: number): void;
  /** First line of the join step / join job. */
  onJoin(): void;
}

/** What the database says after a fan-out, read directly (not from callbacks). */
export interface FanoutCheck {
  /** Distinct children the database records as finished successfully. */
  childrenFinished: number;
  /** Children that exist but are not finished (must be 0 once `finished`). */
  childrenUnfinished: number;
  /** How many times the join's effect was committed: must be exactly 1. */
  joinCommits: number;
  /** The parent (or, without one, the join job) is finished. */
  finished: boolean;
}

export interface FanoutWorker {
  /** Inserts the parent through the producer; its first step / handler spawns the children. */
  insertParent(children: number): Promise<void>;
  /** Reads the outcome from the database; `finished` false means "not yet". */
  check(children: number): Promise<FanoutCheck>;
  stop(): Promise<void>;
}
