/**
 * graphile-worker 0.18, through its documented library API: `runMigrations`,
 * `makeWorkerUtils` (addJobs / addJob) as the producer, and `run()` with a
 * `taskList` as the worker.
 *
 * Two configurations, because graphile-worker's batching is opt-in while
 * gen-durable's group commit is always on:
 *  - "defaults": only the documented concurrency knobs — `concurrency: N` and
 *    `maxPoolSize: max(10, N + 2)` (the README's advice for the pool);
 *  - "batched": the same plus the batching options of the performance page
 *    (https://worker.graphile.org/docs/performance): `localQueue: { size: 500 }`,
 *    `completeJobBatchDelay: 0`, `failJobBatchDelay: 0`.
 * Completed jobs are deleted by graphile-worker, so "finished" = rows gone.
 */
import { Logger, makeWorkerUtils, run, runMigrations, type WorkerUtils } from "graphile-worker";
import pg from "pg";
import type { BenchSystem, OnStart } from "./types.js";

// graphile-worker logs every job at info level by default; the benchmark must not print 60,000 lines.
const silent = new Logger(() => () => {});

export function graphileWorker(url: string, variant: "defaults" | "batched"): BenchSystem {
  const schema = variant === "defaults" ? "bench_graphile_worker" : "bench_graphile_worker_batched";
  const batching =
    variant === "batched" ? { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } : undefined;
  let utils: WorkerUtils | undefined;
  let admin: pg.Pool | undefined;

  return {
    name: variant === "defaults" ? "graphile-worker" : "graphile-worker (batched)",
    schema,
    config: {
      producer: "makeWorkerUtils({ connectionString, schema }) — default pool (10)",
      worker: `run({ connectionString, schema, concurrency: N, maxPoolSize: max(10, N + 2), taskList: { noop }, noHandleSignals: true${
        batching ? ", preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }" : ""
      } })`,
      bulk: "workerUtils.addJobs(specs)",
      single: "workerUtils.addJob('noop', { i })",
    },

    async setup() {
      await runMigrations({ connectionString: url, schema, logger: silent });
      utils = await makeWorkerUtils({ connectionString: url, schema, logger: silent });
      admin = new pg.Pool({ connectionString: url, max: 2 });
    },

    async reset() {
      await admin!.query(`delete from ${schema}._private_jobs`);
    },

    async enqueueBulk(from, count, batchSize) {
      for (let start = from; start < from + count; start += batchSize) {
        const n = Math.min(batchSize, from + count - start);
        await utils!.addJobs(Array.from({ length: n }, (_, k) => ({ identifier: "noop", payload: { i: start + k } })));
      }
    },

    async enqueueOne(i) {
      await utils!.addJob("noop", { i });
    },

    async countFinished(total) {
      const { rows } = await admin!.query<{ n: number }>(`select count(*)::int as n from ${schema}._private_jobs`);
      return total - rows[0]!.n;
    },

    async startWorker(concurrency, onStart: OnStart) {
      const runner = await run({
        connectionString: url,
        schema,
        concurrency,
        maxPoolSize: Math.max(10, concurrency + 2),
        noHandleSignals: true,
        logger: silent,
        taskList: {
          noop: async (payload) => {
            onStart((payload as { i: number }).i);
          },
        },
        ...(batching ? { preset: { worker: batching } } : {}),
      });
      return {
        enqueue: async (i) => {
          await runner.addJob("noop", { i });
        },
        stop: () => runner.stop(),
      };
    },

    async teardown() {
      await utils?.release();
      await admin?.end();
    },
  } satisfies BenchSystem;
}
