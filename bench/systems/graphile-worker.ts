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
 *
 * Fan-out, built by hand (graphile-worker has no parent/child jobs): see
 * `startFanoutWorker` — a counter row and the children inserted in one
 * transaction by the parent task, each child decrementing the counter (once,
 * guarded by a per-child marker row) in one statement that also enqueues the
 * join job when it reaches 0, through graphile-worker's SQL API (`add_jobs`,
 * `add_job`), so the last child's decrement and the join's enqueue commit
 * together.
 */
import { Logger, makeWorkerUtils, run, runMigrations, type TaskList, type WorkerUtils } from "graphile-worker";
import pg from "pg";
import type { BenchSystem, FanoutHooks, OnStart } from "./types.js";

// graphile-worker logs every job at info level by default; the benchmark must not print 60,000 lines.
const silent = new Logger(() => () => {});

export function graphileWorker(url: string, variant: "defaults" | "batched"): BenchSystem {
  const schema = variant === "defaults" ? "bench_graphile_worker" : "bench_graphile_worker_batched";
  const batching =
    variant === "batched" ? { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } : undefined;
  let utils: WorkerUtils | undefined;
  let admin: pg.Pool | undefined;
  let fanoutRun = 0;
  const runWorker = (concurrency: number, taskList: TaskList) =>
    run({
      connectionString: url,
      schema,
      concurrency,
      maxPoolSize: Math.max(10, concurrency + 2),
      noHandleSignals: true,
      logger: silent,
      taskList,
      ...(batching ? { preset: { worker: batching } } : {}),
    });

  return {
    name: variant === "defaults" ? "graphile-worker" : "graphile-worker (batched)",
    schema,
    config: {
      producer: "makeWorkerUtils({ connectionString, schema }) — default pool (10)",
      worker: `run({ connectionString, schema, concurrency: N, maxPoolSize: max(10, N + 2), taskList: { noop }, noHandleSignals: true${
        batching
          ? ", preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }"
          : ""
      } })`,
      bulk: "workerUtils.addJobs(specs)",
      single: "workerUtils.addJob('noop', { i })",
      fanout:
        "by hand: tasks fanout_parent / fanout_child / fanout_join in one run() at concurrency N (same options as above); " +
        "parent: one transaction = insert counter row (remaining = N) + select add_jobs(N child specs); " +
        "child: one statement = insert marker (fanout, child) on conflict do nothing, decrement the counter only if the marker was new, " +
        "and add_job('fanout_join') when it reaches 0; join: insert a row recording its effect",
    },
    fanoutDescription:
      "hand-built: counter row + N children inserted in one transaction (add_jobs); each child decrements the counter once (guarded by a marker row, so a re-run cannot count twice) and the decrement that reaches 0 enqueues the join job in the same statement (add_job); the join does not see the children's outcomes",

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
      const runner = await runWorker(concurrency, {
        noop: async (payload) => {
          onStart((payload as { i: number }).i);
        },
      });
      return {
        enqueue: async (i) => {
          await runner.addJob("noop", { i });
        },
        stop: () => runner.stop(),
      };
    },

    async startFanoutWorker(concurrency, hooks: FanoutHooks) {
      await admin!.query(`
        create table if not exists ${schema}.bench_fanout (id int primary key, remaining int not null);
        create table if not exists ${schema}.bench_fanout_done (fanout int not null, child int not null, primary key (fanout, child));
        create table if not exists ${schema}.bench_fanout_joined (fanout int not null, at timestamptz not null default now());
        truncate ${schema}.bench_fanout, ${schema}.bench_fanout_done, ${schema}.bench_fanout_joined`);
      const fanout = ++fanoutRun;
      const runner = await runWorker(concurrency, {
        fanout_parent: async (payload, helpers) => {
          const { fanout, children } = payload as { fanout: number; children: number };
          const specs = Array.from({ length: children }, (_, i) => ({
            identifier: "fanout_child",
            payload: { fanout, i },
          }));
          await helpers.withPgClient(async (client) => {
            await client.query("begin");
            try {
              // A re-run of the parent (after a crash) finds the counter and adds nothing.
              const created = await client.query(
                `insert into ${schema}.bench_fanout (id, remaining) values ($1, $2) on conflict do nothing`,
                [fanout, children],
              );
              if (created.rowCount === 1) {
                await client.query(
                  `select count(*) from ${schema}.add_jobs(array(select json_populate_recordset(null::${schema}.job_spec, $1::json)))`,
                  [JSON.stringify(specs)],
                );
              }
              await client.query("commit");
            } catch (error) {
              await client.query("rollback");
              throw error;
            }
          });
        },
        fanout_child: async (payload, helpers) => {
          const { fanout, i } = payload as { fanout: number; i: number };
          hooks.onChild(i);
          await helpers.query(
            `with mark as (
               insert into ${schema}.bench_fanout_done (fanout, child) values ($1, $2) on conflict do nothing returning fanout
             ),
             dec as (
               update ${schema}.bench_fanout c set remaining = c.remaining - 1 from mark where c.id = mark.fanout returning c.remaining
             )
             select j.id from (select 1 from dec where remaining = 0) last
             cross join lateral ${schema}.add_job(identifier => 'fanout_join', payload => json_build_object('fanout', $1::int)) j`,
            [fanout, i],
          );
        },
        fanout_join: async (payload, helpers) => {
          hooks.onJoin();
          await helpers.query(`insert into ${schema}.bench_fanout_joined (fanout) values ($1)`, [
            (payload as { fanout: number }).fanout,
          ]);
        },
      });
      return {
        insertParent: async (children) => {
          await utils!.addJob("fanout_parent", { fanout, children });
        },
        check: async () => {
          const { rows } = await admin!.query<{ done: number; unfinished: number; joins: number; jobs: number }>(
            `select (select count(*)::int from ${schema}.bench_fanout_done where fanout = $1) as done,
                    (select count(*)::int from ${schema}._private_jobs j join ${schema}._private_tasks t on t.id = j.task_id
                      where t.identifier = 'fanout_child') as unfinished,
                    (select count(*)::int from ${schema}.bench_fanout_joined where fanout = $1) as joins,
                    (select count(*)::int from ${schema}._private_jobs j join ${schema}._private_tasks t on t.id = j.task_id
                      where t.identifier in ('fanout_parent', 'fanout_child', 'fanout_join')) as jobs`,
            [fanout],
          );
          const row = rows[0]!;
          return {
            childrenFinished: row.done,
            childrenUnfinished: row.unfinished,
            joinCommits: row.joins,
            finished: row.joins > 0 && row.jobs === 0,
          };
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
