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
  /** Closes everything setup() opened. */
  teardown(): Promise<void>;
}
