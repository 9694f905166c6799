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
 *
 * Fan-out uses pg-boss's own flows (`boss.flow(jobs)` with `dependsOn`): the
 * parent job's handler sends one flow of N children plus a join job that
 * depends on all of them. pg-boss unblocks dependents out of band, in a
 * background resolver every `flowIntervalSeconds` (default 5 s, minimum 1 s:
 * we use 1 s), and the unblocked join job is found by its worker's poll (no
 * NOTIFY for it): its queue is created without `notify` and polled every
 * 0.5 s (`pollingIntervalSeconds`' minimum). Both are pg-boss's documented
 * knobs set to their fastest values.
 */
import { PgBoss } from "pg-boss";
import pg from "pg";
import type { BenchSystem, FanoutHooks, OnStart } from "./types.js";

const QUEUE = "noop";
const FAN = { parent: "fanout_parent", child: "fanout_child", join: "fanout_join" } as const;
const FLOW_INTERVAL_SECONDS = 1;
const JOIN_POLLING_SECONDS = 0.5;

/** localConcurrency × batchSize = concurrency; two workers so one fetches while the other completes. */
export function pgBossSplit(concurrency: number): { localConcurrency: number; batchSize: number } {
  const localConcurrency = concurrency >= 4 ? 2 : 1;
  return { localConcurrency, batchSize: Math.ceil(concurrency / localConcurrency) };
}

export function pgBoss(url: string): BenchSystem {
  const schema = "bench_pgboss";
  let producer: PgBoss | undefined;
  let admin: pg.Pool | undefined;
  const report = (error: unknown) =>
    console.error(`  [pg-boss error] ${error instanceof Error ? error.message : String(error)}`);

  return {
    name: "pg-boss",
    schema,
    config: {
      producer:
        "new PgBoss({ connectionString, schema, supervise: false, schedule: false }).start() — default pool (max 10)",
      queue: `createQueue('${QUEUE}', { notify: true })`,
      worker:
        "new PgBoss({ connectionString, schema, useListenNotify: true }).start(); " +
        "work('noop', { localConcurrency: L, batchSize: N / L, burstWhenBatchFull: true }, handler) with L = 2 (1 below N = 4)",
      bulk: "boss.insert('noop', jobs)",
      single: "boss.send('noop', { i })",
      fanout:
        `native flows: queues ${FAN.parent} and ${FAN.child} with { notify: true }, ${FAN.join} without; worker new PgBoss({ useListenNotify: true, flowIntervalSeconds: ${FLOW_INTERVAL_SECONDS} }); ` +
        `parent handler: boss.flow([N × { ref, name: '${FAN.child}', data: { i } }, { ref: 'join', name: '${FAN.join}', dependsOn: all N refs }]); ` +
        `children: work('${FAN.child}', { localConcurrency: L, batchSize: N / L, burstWhenBatchFull: true }); join: work('${FAN.join}', { pollingIntervalSeconds: ${JOIN_POLLING_SECONDS} })`,
    },
    fanoutDescription: `native flows: the parent's handler sends one flow of N children + a join job depending on all of them (one transaction); a background resolver (every flowIntervalSeconds = ${FLOW_INTERVAL_SECONDS} s, the minimum) decrements the join's pending dependencies for completed children, 1,000 per statement; the join job is then found by polling (every ${JOIN_POLLING_SECONDS} s, the minimum); the join does not see the children's outcomes`,

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
        await producer!.insert(
          QUEUE,
          Array.from({ length: n }, (_, k) => ({ data: { i: start + k } })),
        );
      }
    },

    async enqueueOne(i) {
      await producer!.send(QUEUE, { i });
    },

    async countFinished() {
      const { rows } = await admin!.query<{ n: number }>(
        `select count(*)::int as n from ${schema}.job where name = $1 and state = 'completed'`,
        [QUEUE],
      );
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

    async startFanoutWorker(concurrency, hooks: FanoutHooks) {
      for (const [name, notify] of [
        [FAN.parent, true],
        [FAN.child, true],
        [FAN.join, false],
      ] as const) {
        if (!(await producer!.getQueue(name))) await producer!.createQueue(name, { notify });
      }
      const boss = new PgBoss({
        connectionString: url,
        schema,
        useListenNotify: true,
        flowIntervalSeconds: FLOW_INTERVAL_SECONDS,
      });
      boss.on("error", report);
      await boss.start();
      await boss.work<{ children: number }>(FAN.parent, async (jobs) => {
        for (const job of jobs) {
          const refs = Array.from({ length: job.data.children }, (_, i) => `c${i}`);
          await boss.flow([
            ...refs.map((ref, i) => ({ ref, name: FAN.child, data: { i } })),
            { ref: "join", name: FAN.join, dependsOn: refs },
          ]);
        }
      });
      const { localConcurrency, batchSize } = pgBossSplit(concurrency);
      await boss.work<{ i: number }>(
        FAN.child,
        { localConcurrency, batchSize, burstWhenBatchFull: true },
        async (jobs) => {
          for (const job of jobs) hooks.onChild(job.data.i);
        },
      );
      await boss.work(FAN.join, { pollingIntervalSeconds: JOIN_POLLING_SECONDS }, async (jobs) => {
        for (const _job of jobs) hooks.onJoin();
      });
      return {
        insertParent: async (children) => {
          await producer!.send(FAN.parent, { children });
        },
        check: async () => {
          const { rows } = await admin!.query<{ done: number; unfinished: number; joins: number; open: number }>(
            `select count(*) filter (where name = $1 and state = 'completed')::int as done,
                    count(*) filter (where name = $1 and state <> 'completed')::int as unfinished,
                    count(*) filter (where name = $2 and state = 'completed')::int as joins,
                    count(*) filter (where name in ($2, $3) and state <> 'completed')::int as open
             from ${schema}.job where name in ($1, $2, $3)`,
            [FAN.child, FAN.join, FAN.parent],
          );
          const row = rows[0]!;
          return {
            childrenFinished: row.done,
            childrenUnfinished: row.unfinished,
            joinCommits: row.joins,
            finished: row.joins > 0 && row.open === 0,
          };
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
