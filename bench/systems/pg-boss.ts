/**
 * pg-boss 12, through its documented API: `new PgBoss({ connectionString, schema })`,
 * `start()` (which installs the schema), `createQueue`, `insert` / `send` as the
 * producer and `work()` as the worker.
 *
 * pg-boss's worker loop is fetch → handler(batch) → complete(batch) → sleep
 * for the polling interval (default 2 s) unless a burst trigger or NOTIFY says
 * there is more. With its default `batchSize: 1` that means roughly
 * `localConcurrency` jobs per polling interval — not a fair reading of the
 * library. So we use the documented throughput knobs:
 *  - `batchSize` with `burstWhenBatchFull: true` (fetch again at once while
 *    batches come back full),
 *  - `localConcurrency` workers, so that localConcurrency × batchSize = N jobs
 *    in flight (the same bound the other systems get from `concurrency: N`),
 *  - `useListenNotify: true` on the instance and `notify: true` on the queue,
 *    so an idle worker wakes on insert (otherwise latency is the 2 s poll).
 * Completed jobs stay in the table with state 'completed' until retention.
 */
import { PgBoss } from "pg-boss";
import pg from "pg";
import type { BenchSystem, OnStart } from "./types.js";

const QUEUE = "noop";

/** localConcurrency × batchSize = concurrency; two workers so one fetches while the other completes. */
export function pgBossSplit(concurrency: number): { localConcurrency: number; batchSize: number } {
  const localConcurrency = concurrency >= 4 ? 2 : 1;
  return { localConcurrency, batchSize: Math.ceil(concurrency / localConcurrency) };
}

export function pgBoss(url: string): BenchSystem {
  const schema = "bench_pgboss";
  let producer: PgBoss | undefined;
  let admin: pg.Pool | undefined;
  const report = (error: unknown) => console.error(`  [pg-boss error] ${error instanceof Error ? error.message : String(error)}`);

  return {
    name: "pg-boss",
    schema,
    config: {
      producer: "new PgBoss({ connectionString, schema, supervise: false, schedule: false }).start() — default pool (max 10)",
      queue: `createQueue('${QUEUE}', { notify: true })`,
      worker:
        "new PgBoss({ connectionString, schema, useListenNotify: true }).start(); " +
        "work('noop', { localConcurrency: L, batchSize: N / L, burstWhenBatchFull: true }, handler) with L = 2 (1 below N = 4)",
      bulk: "boss.insert('noop', jobs)",
      single: "boss.send('noop', { i })",
    },

    async setup() {
      // The producer only sends: no maintenance or cron timers of its own (the worker instance, with defaults, does
      // those), so it stays quiet while the other systems are measured.
      producer = new PgBoss({ connectionString: url, schema, supervise: false, schedule: false });
      producer.on("error", report);
      await producer.start();
      await producer.createQueue(QUEUE, { notify: true });
      admin = new pg.Pool({ connectionString: url, max: 2 });
    },

    async reset() {
      // job is partitioned by queue name; truncating the parent empties every partition.
      await admin!.query(`truncate ${schema}.job cascade`);
    },

    async enqueueBulk(from, count, batchSize) {
      for (let start = from; start < from + count; start += batchSize) {
        const n = Math.min(batchSize, from + count - start);
        await producer!.insert(QUEUE, Array.from({ length: n }, (_, k) => ({ data: { i: start + k } })));
      }
    },

    async enqueueOne(i) {
      await producer!.send(QUEUE, { i });
    },

    async countFinished() {
      const { rows } = await admin!.query<{ n: number }>(`select count(*)::int as n from ${schema}.job where name = $1 and state = 'completed'`, [QUEUE]);
      return rows[0]!.n;
    },

    async startWorker(concurrency, onStart: OnStart) {
      const boss = new PgBoss({ connectionString: url, schema, useListenNotify: true });
      boss.on("error", report);
      await boss.start();
      const { localConcurrency, batchSize } = pgBossSplit(concurrency);
      await boss.work<{ i: number }>(QUEUE, { localConcurrency, batchSize, burstWhenBatchFull: true }, async (jobs) => {
        for (const job of jobs) onStart(job.data.i);
      });
      return {
        enqueue: async (i) => {
          await boss.send(QUEUE, { i });
        },
        stop: () => boss.stop({ graceful: true, close: true }),
      };
    },

    async teardown() {
      await producer?.stop({ graceful: true, close: true });
      await admin?.end();
    },
  } satisfies BenchSystem;
}
