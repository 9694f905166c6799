/**
 * The flow-control phase (issue 5's figures): what concurrency keys and rate
 * limits cost gen-durable, against the peers' nearest equivalents, same run.
 *
 *  1. Claims/s at concurrency C (default 32): N no-op jobs (default 10,000)
 *     pre-inserted in bulk, timed from the worker's start call until the
 *     database says all are finished (as main.ts's processing phase does):
 *       (a) unkeyed — no key / no named queue / a standard pg-boss queue;
 *       (b) keyed — N/10 distinct keys, 10 jobs each, job i gets key i mod K;
 *       (c) hot key — one job of key "hot" held running by a separate worker
 *           (concurrency 1), 10,000 more of "hot" queued behind it (inserted
 *           first, so they sit ahead of everything else), then N jobs over K
 *           other keys; the rate of those others shows whether the hot key's
 *           backlog blocks the head of the line.
 *     Equivalents: graphile-worker `queueName` (a named queue runs one job at
 *     a time), pg-boss a queue with policy "singleton" and `singletonKey`
 *     (one active job per key, enforced by a unique index over active jobs).
 *     (a) and (b) run in pairs, back to back (FlowParams.pairs).
 *  2. gen-durable's rate limits: a no-op job whose step takes a token from a
 *     bucket that never runs short (limit 1e9 per second) against the same job
 *     without `rateLimit`, in pairs run back to back; and one throttled run (default
 *     5,000 jobs at 500/s, burst = limit as by default): the rate achieved
 *     after the burst, against the limit; and a keyed throttled run (default
 *     2,000 jobs over 50 keys, one bucket of 100/s, burst 20). Both count the
 *     postponements (`step:rate_limited`) per run: a short bucket should cost
 *     one per run, not a retry every ~1 / limit while a step waits its turn.
 *
 * Every system gets schemas of its own (bench_flow_*), dropped at the end.
 */
import { Logger, makeWorkerUtils, run, runMigrations, type WorkerUtils } from "graphile-worker";
import { PgBoss } from "pg-boss";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { loadavg } from "node:os";
import { dirname } from "node:path";
import pg from "pg";
import { z } from "zod";
import { defineJob, GenDurable, migrate, type InsertManyItem } from "./engine.js";
import { pgBossSplit } from "./systems/pg-boss.js";
import { fmt, fmtRatio, HandlerCalls, median, medianRun, round, sleep, warmUp } from "./util.js";

export interface FlowParams {
  /** Jobs per run: unkeyed, keyed, and the others of the hot-key run. */
  jobs: number;
  /** Distinct keys of the keyed runs (default jobs / 10). */
  keys: number;
  /** Jobs queued behind the held hot key. */
  hotJobs: number;
  concurrency: number;
  /** Jobs of the throttled rate-limit run, and its limit per second. */
  throttleJobs: number;
  throttleRate: number;
  /** Jobs of the keyed throttled run: over `keyedThrottleKeys` keys, one bucket of 100/s, burst 20. */
  keyedThrottleJobs: number;
  keyedThrottleKeys: number;
  /** The keyed warm-up's jobs, and the first round of the unkeyed one (see warmUp in util.ts). */
  warmupJobs: number;
  /** Untimed unkeyed processing before the first measured pair, in ms (BENCH_WARMUP_MS, as main.ts). */
  warmupMs: number;
  bulkBatch: number;
  /**
   * Pairs of runs behind each within-system ratio (keyed ÷ unkeyed, never-short ÷ without a limit):
   * the two runs of a pair go back to back, and the ratio is the median of the pairs' ratios. Runs
   * of 10,000 jobs take about a second, and a shared host's load (CPU steal among it) moves one
   * such run by a factor of two; a pair sees the same host, and the median drops a pair that did not.
   */
  pairs: number;
}

export function flowParamsFromEnv(intEnv: (name: string, fallback: number) => number): FlowParams {
  const jobs = intEnv("BENCH_FLOW_JOBS", 10_000);
  return {
    jobs,
    keys: intEnv("BENCH_FLOW_KEYS", Math.max(1, Math.round(jobs / 10))),
    hotJobs: intEnv("BENCH_FLOW_HOT_JOBS", jobs),
    concurrency: intEnv("BENCH_FLOW_CONCURRENCY", 32),
    throttleJobs: intEnv("BENCH_FLOW_THROTTLE_JOBS", 5_000),
    throttleRate: intEnv("BENCH_FLOW_THROTTLE_RATE", 500),
    keyedThrottleJobs: intEnv("BENCH_FLOW_KEYED_THROTTLE_JOBS", 2_000),
    keyedThrottleKeys: intEnv("BENCH_FLOW_KEYED_THROTTLE_KEYS", 50),
    warmupJobs: Math.min(2_000, jobs),
    warmupMs: intEnv("BENCH_WARMUP_MS", 3_000),
    bulkBatch: 1_000,
    pairs: intEnv("BENCH_FLOW_PAIRS", 3),
  };
}

/** The system keys of main.ts this phase knows; others (gen-durable-pool32) are skipped. */
export const FLOW_SYSTEMS = ["gen-durable", "graphile-worker", "graphile-worker-batched", "pg-boss"] as const;

/** A run that takes longer than this is reported as unfinished (with the rate so far), not waited for. */
const RUN_TIMEOUT_MS = 180_000;
/** Payload numbers: the hot key's backlog and its holder live far above the others' 0..N-1. */
const HOT_BASE = 10_000_000;
const HOLDER = 20_000_000;
const HOT_KEY = "hot";
/** The keyed throttled run's bucket: the soak's shared limit. */
const KEYED_THROTTLE = { limit: 100, burst: 20 };
/** gen-durable: the queue of the hot key's holder (see genDurableFlow). */
const HOLD_QUEUE = "flow_hold";

interface Job {
  i: number;
  key: string | null;
}

type Handler = (i: number) => void | Promise<void>;

/** What a run's worker is for; pg-boss uses a different queue for keyed work, graphile-worker's holder no local queue. */
interface WorkerRole {
  keyed: boolean;
  /** The worker that claims and holds the hot key's first job: concurrency 1, nothing fetched ahead. */
  holder?: boolean;
}

interface FlowSystem {
  readonly name: string;
  readonly schema: string;
  readonly config: Record<string, unknown>;
  setup(): Promise<void>;
  reset(): Promise<void>;
  /** Bulk insert in batches, in the order given (keyed jobs into the keyed queue where that differs). */
  enqueue(jobs: Job[], keyed: boolean, batch: number): Promise<void>;
  /**
   * Finished jobs according to the database: `others` = not of the hot key,
   * `hot` = of the hot key (the holder included).
   */
  finished(which: "all" | "others" | "hot", totals: { all: number; others: number; hot: number }): Promise<number>;
  /** Whether the database shows the holder as running (claimed, not finished). */
  holderRunning(): Promise<boolean>;
  startWorker(concurrency: number, role: WorkerRole, handler: Handler): Promise<{ stop(): Promise<void> }>;
  teardown(): Promise<void>;
}

export interface FlowRun {
  jobs: number;
  ms: number;
  perSecond: number;
  startupMs: number;
  handlerCalls: number;
  /** Read from the database at the end: jobs of the run finished. */
  finished: number;
  /** False when the run hit its deadline; `perSecond` is then finished ÷ elapsed. */
  completed: boolean;
}

export interface HotKeyRun extends FlowRun {
  hotJobs: number;
  /** From the database, when the others were done: hot-key jobs finished (must be 0) and the holder still running. */
  hotFinished: number;
  hotHandlerCalls: number;
  holderRunning: boolean;
  verified: boolean;
  problems: string[];
}

/** The runs of one within-system ratio, pair by pair (see FlowParams.pairs). */
export interface RunPair {
  /** jobs/s of the run measured (keyed, or with the rate limit) and of its baseline. */
  measured: number;
  baseline: number;
  /** measured ÷ baseline. */
  ratio: number;
}

export interface FlowSystemResult {
  name: string;
  schema: string;
  config: Record<string, unknown>;
  /** The median run of each kind, by jobs/s. */
  unkeyed: FlowRun;
  keyed: FlowRun;
  hotKey: HotKeyRun;
  /** keyed ÷ unkeyed jobs/s: the median of `keyedPairs`' ratios. */
  keyedRatio: number;
  keyedPairs: RunPair[];
  /** Others of the hot-key run ÷ unkeyed, and ÷ keyed. */
  hotOthersVsUnkeyed: number;
  hotOthersVsKeyed: number;
  verified: boolean;
  problems: string[];
}

/** A throttled run's pace and what waiting for tokens cost. */
export interface ThrottledRun extends FlowRun {
  limitPerSecond: number;
  burst: number;
  /** (jobs − burst) ÷ (last handler start − first handler start): the rate once the burst is spent. */
  achievedPerSecond: number;
  /** achievedPerSecond ÷ limit. */
  achievedVsLimit: number;
  /** Most handler starts within any one period (1 s) — the guarantee is at most burst + limit. */
  maxStartsInOnePeriod: number;
  bound: number;
  /** `step:rate_limited` events: steps rescheduled because their bucket was short. */
  postponements: number;
  /** postponements ÷ jobs. */
  postponementsPerRun: number;
  /** Most postponements of one instance. */
  mostPostponementsOfOne: number;
}

export interface RateLimitResult {
  /** The same no-op job without rateLimit, run beside it (the median run, by jobs/s). */
  baseline: FlowRun;
  /** With `rateLimit: { name: "free" }`, free = { limit: 1e9, period: "1s" } (the median run). */
  neverThrottled: FlowRun;
  /** neverThrottled ÷ baseline jobs/s: the median of `pairs`' ratios. */
  overheadRatio: number;
  pairs: RunPair[];
  throttled: ThrottledRun;
  /** The same no-op job keyed over `keys` keys, one bucket of 100/s with burst 20. */
  keyedThrottled: ThrottledRun & { keys: number };
  verified: boolean;
  problems: string[];
}

export interface FlowResult {
  parameters: FlowParams;
  loadAverage: { start: number[]; end: number[] };
  systems: FlowSystemResult[];
  /** gen-durable's rate ÷ each peer's, per run kind. */
  comparisons: Array<{
    metric: string;
    label: string;
    "gen-durable": number;
    peers: Array<{ name: string; value: number; ratio: number }>;
  }>;
  /** Issue 5: keyed within 2× of unkeyed, i.e. keyed ÷ unkeyed ≥ 0.5 (the hot-key ratios are reported beside it, not part of it). */
  goal: {
    minRatio: number;
    keyedRatio: number;
    hotOthersVsUnkeyed: number;
    hotOthersVsKeyed: number;
    met: boolean;
  } | null;
  rateLimit: RateLimitResult | null;
  notes: string[];
  totalSeconds: number;
}

const keyOf = (i: number, keys: number) => `k${i % keys}`;

async function vacuum(admin: pg.Pool, schema: string): Promise<void> {
  const { rows } = await admin.query<{ t: string }>(
    `select format('%I.%I', schemaname, tablename) as t from pg_tables where schemaname = $1`,
    [schema],
  );
  if (rows.length > 0) await admin.query(`vacuum analyze ${rows.map((r) => r.t).join(", ")}`);
}

// ---------------------------------------------------------------- gen-durable

interface GenDurableFlow extends FlowSystem {
  /** Rate-limit runs: jobs of kind `free` (never-short bucket), `throttle`, or `keyedThrottle` (job i keyed k(i mod keys)). */
  enqueueKind(kind: "free" | "throttle" | "keyedThrottle", count: number, batch: number, keys?: number): Promise<void>;
  /** Postponements (`step:rate_limited`) per instance id since the last reset. */
  readonly postponed: Map<string, number>;
}

function genDurableFlow(url: string, admin: pg.Pool, throttleRate: number): GenDurableFlow {
  const schema = "bench_flow_gen_durable";
  // Handlers are swapped per run (job definitions are module-level in real code). The holder's engine
  // runs beside the measured one in the hot-key run, so its job (i = HOLDER) has a handler of its own.
  let handler: Handler = () => {};
  let holderHandler: Handler = () => {};
  const perform = (a: { i: number }) => {
    const pending = a.i === HOLDER ? holderHandler(a.i) : handler(a.i);
    return pending ? pending.then(() => null) : null;
  };
  const args = z.object({ i: z.number() });
  const Noop = defineJob({ name: "Noop", args, perform });
  const NoopFree = defineJob({ name: "NoopFree", args, rateLimit: { name: "free" }, perform });
  const NoopThrottled = defineJob({ name: "NoopThrottled", args, rateLimit: { name: "throttle" }, perform });
  const NoopKeyedThrottled = defineJob({
    name: "NoopKeyedThrottled",
    args,
    rateLimit: { name: "keyedThrottle" },
    perform,
  });
  const postponed = new Map<string, number>();
  // The hot key's holder runs in a queue of its own on a node that runs nothing else (a key spans
  // queues, so it still holds "hot" for the default queue). On the default queue, the holder's node
  // would claim rows ahead of its busy slot, and a keyed row claimed ahead holds its key until the
  // node gives it back a second later (see README, "Flow control"): not what this run measures.
  const Hold = defineJob({ name: "Hold", queue: HOLD_QUEUE, args, perform });
  const rateLimits = {
    free: { limit: 1e9, period: "1s" },
    throttle: { limit: throttleRate, period: "1s" },
    keyedThrottle: { limit: KEYED_THROTTLE.limit, period: "1s", burst: KEYED_THROTTLE.burst },
  };
  let producer: GenDurable | undefined;
  const insertBatches = async (items: InsertManyItem[], batch: number) => {
    for (let start = 0; start < items.length; start += batch)
      await producer!.insertMany(items.slice(start, start + batch));
  };

  return {
    name: "gen-durable",
    schema,
    config: {
      job: "defineJob({ name: 'Noop', args: z.object({ i: z.number() }), perform: no-op })",
      keyed:
        "engine.insertMany([{ machine: Noop, args: { i }, concurrencyKey: `k${i mod K}` }, …]) — same job, same queue",
      worker:
        "new GenDurable({ connectionString, schema, queues: { default: C }, machines: [Noop, NoopFree, NoopThrottled, NoopKeyedThrottled], rateLimits })",
      holder: `a second engine, queues: { ${HOLD_QUEUE}: 1 }, machines: [Hold], which claims the hot key's first job (a Hold job in queue ${HOLD_QUEUE}, concurrencyKey "hot") and holds it (its handler awaits a promise)`,
      rateLimits: `{ free: { limit: 1e9, period: "1s" }, throttle: { limit: ${throttleRate}, period: "1s" }, keyedThrottle: { limit: ${KEYED_THROTTLE.limit}, period: "1s", burst: ${KEYED_THROTTLE.burst} } } (burst = limit unless given)`,
      rateLimited:
        "defineJob({ name: 'NoopFree' | 'NoopThrottled' | 'NoopKeyedThrottled', rateLimit: { name: 'free' | 'throttle' | 'keyedThrottle' }, … }); keyed: concurrencyKey k(i mod keys)",
    },
    async setup() {
      await migrate({ connectionString: url, schema });
      producer = new GenDurable({ connectionString: url, schema });
      await producer.start();
    },
    async reset() {
      await admin.query(
        `truncate ${schema}.instances, ${schema}.transitions, ${schema}.signals, ${schema}.concurrency_keys, ${schema}.rate_limit_buckets`,
      );
    },
    async enqueue(jobs, _keyed, batch) {
      await insertBatches(
        jobs.map((j) => ({
          machine: j.i === HOLDER ? Hold : Noop,
          args: { i: j.i },
          ...(j.key === null ? {} : { concurrencyKey: j.key }),
        })),
        batch,
      );
    },
    async enqueueKind(kind, count, batch, keys = 1) {
      const machine = kind === "free" ? NoopFree : kind === "throttle" ? NoopThrottled : NoopKeyedThrottled;
      const keyOfJob = (i: number) => (kind === "keyedThrottle" ? { concurrencyKey: keyOf(i, keys) } : {});
      await insertBatches(
        Array.from({ length: count }, (_, i) => ({ machine, args: { i }, ...keyOfJob(i) })),
        batch,
      );
    },
    postponed,
    async finished(which) {
      const where =
        which === "all" ? "" : which === "hot" ? "and concurrency_key = $1" : "and concurrency_key is distinct from $1";
      const { rows } = await admin.query<{ n: number }>(
        `select count(*)::int as n from ${schema}.instances where status = 'done' ${where}`,
        which === "all" ? [] : [HOT_KEY],
      );
      return rows[0]!.n;
    },
    async holderRunning() {
      const { rows } = await admin.query(
        `select 1 from ${schema}.instances where status = 'running' and concurrency_key = $1 and (state->>'i')::int = $2`,
        [HOT_KEY, HOLDER],
      );
      return rows.length === 1;
    },
    async startWorker(concurrency, role, h) {
      if (role.holder) holderHandler = h;
      else handler = h;
      const engine = role.holder
        ? new GenDurable({ connectionString: url, schema, queues: { [HOLD_QUEUE]: concurrency }, machines: [Hold] })
        : new GenDurable({
            connectionString: url,
            schema,
            queues: { default: concurrency },
            machines: [Noop, NoopFree, NoopThrottled, NoopKeyedThrottled],
            rateLimits,
          });
      engine.on("step:rate_limited", (e) => void postponed.set(e.id, (postponed.get(e.id) ?? 0) + 1));
      await engine.start();
      return { stop: () => engine.stop() };
    },
    async teardown() {
      await producer?.stop();
    },
  };
}

// ---------------------------------------------------------------- graphile-worker

const silent = new Logger(() => () => {});

function graphileFlow(url: string, admin: pg.Pool, variant: "defaults" | "batched"): FlowSystem {
  const schema = variant === "defaults" ? "bench_flow_graphile_worker" : "bench_flow_graphile_worker_batched";
  const batching = { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 };
  let utils: WorkerUtils | undefined;
  return {
    name: variant === "defaults" ? "graphile-worker" : "graphile-worker (batched)",
    schema,
    config: {
      keyed:
        "workerUtils.addJobs([{ identifier: 'noop', payload: { i }, queueName: `k${i mod K}` }, …]) — a named queue runs one job at a time",
      worker: `run({ connectionString, schema, concurrency: C, maxPoolSize: max(10, C + 2), taskList: { noop }, noHandleSignals: true${
        variant === "batched"
          ? ", preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } }"
          : ""
      } })`,
      holder:
        "a second run({ concurrency: 1 }) without batching (a local queue would fetch jobs ahead), which takes the hot queue's first job and holds it",
    },
    async setup() {
      await runMigrations({ connectionString: url, schema, logger: silent });
      utils = await makeWorkerUtils({ connectionString: url, schema, logger: silent });
    },
    async reset() {
      await admin.query(`delete from ${schema}._private_jobs`);
      await admin.query(`delete from ${schema}._private_job_queues`);
    },
    async enqueue(jobs, _keyed, batch) {
      for (let start = 0; start < jobs.length; start += batch) {
        await utils!.addJobs(
          jobs
            .slice(start, start + batch)
            .map((j) => ({ identifier: "noop", payload: { i: j.i }, ...(j.key === null ? {} : { queueName: j.key }) })),
        );
      }
    },
    async finished(which, totals) {
      // Completed jobs are deleted: finished = expected − still there.
      const where =
        which === "all" ? "" : which === "hot" ? "where q.queue_name = $1" : "where q.queue_name is distinct from $1";
      const { rows } = await admin.query<{ n: number }>(
        `select count(*)::int as n from ${schema}._private_jobs j left join ${schema}._private_job_queues q on q.id = j.job_queue_id ${where}`,
        which === "all" ? [] : [HOT_KEY],
      );
      return totals[which] - rows[0]!.n;
    },
    async holderRunning() {
      const { rows } = await admin.query(
        `select 1 from ${schema}._private_jobs where locked_at is not null and (payload->>'i')::int = $1`,
        [HOLDER],
      );
      return rows.length === 1;
    },
    async startWorker(concurrency, role, handler) {
      const runner = await run({
        connectionString: url,
        schema,
        concurrency,
        maxPoolSize: Math.max(10, concurrency + 2),
        noHandleSignals: true,
        logger: silent,
        taskList: { noop: (payload) => handler((payload as { i: number }).i) },
        ...(variant === "batched" && !role.holder ? { preset: { worker: batching } } : {}),
      });
      return { stop: () => runner.stop() };
    },
    async teardown() {
      await utils?.release();
    },
  };
}

// ---------------------------------------------------------------- pg-boss

function pgBossFlow(url: string, admin: pg.Pool): FlowSystem {
  const schema = "bench_flow_pgboss";
  const PLAIN = "flow_plain";
  const KEYED = "flow_keyed";
  let producer: PgBoss | undefined;
  const report = (error: unknown) =>
    console.error(`  [pg-boss error] ${error instanceof Error ? error.message : String(error)}`);
  return {
    name: "pg-boss",
    schema,
    config: {
      queues: `createQueue('${PLAIN}', { notify: true }) for unkeyed jobs; createQueue('${KEYED}', { policy: 'singleton', notify: true }) for keyed ones`,
      keyed: `boss.insert('${KEYED}', [{ data: { i }, singletonKey: \`k\${i mod K}\` }, …]) — policy singleton: at most one active job per singletonKey (unique index on (name, singleton_key) where state = 'active'; fetch skips keys with an active job)`,
      worker:
        "new PgBoss({ connectionString, schema, useListenNotify: true }).start(); work(queue, { localConcurrency: 2, batchSize: C / 2, burstWhenBatchFull: true }, handler) — as in the processing phase",
      holder: `a second instance, work('${KEYED}', { localConcurrency: 1, batchSize: 1 }), which takes the hot key's first job and holds it`,
    },
    async setup() {
      producer = new PgBoss({ connectionString: url, schema, supervise: false, schedule: false });
      producer.on("error", report);
      await producer.start();
      await producer.createQueue(PLAIN, { notify: true });
      await producer.createQueue(KEYED, { policy: "singleton", notify: true });
    },
    async reset() {
      await admin.query(`truncate ${schema}.job cascade`);
    },
    async enqueue(jobs, keyed, batch) {
      for (let start = 0; start < jobs.length; start += batch) {
        await producer!.insert(
          keyed ? KEYED : PLAIN,
          jobs
            .slice(start, start + batch)
            .map((j) => ({ data: { i: j.i }, ...(j.key === null ? {} : { singletonKey: j.key }) })),
        );
      }
    },
    async finished(which) {
      const where =
        which === "all" ? "" : which === "hot" ? "and singleton_key = $1" : "and singleton_key is distinct from $1";
      const { rows } = await admin.query<{ n: number }>(
        `select count(*)::int as n from ${schema}.job where name in ('${PLAIN}', '${KEYED}') and state = 'completed' ${where}`,
        which === "all" ? [] : [HOT_KEY],
      );
      return rows[0]!.n;
    },
    async holderRunning() {
      const { rows } = await admin.query(
        `select 1 from ${schema}.job where name = '${KEYED}' and state = 'active' and (data->>'i')::int = $1`,
        [HOLDER],
      );
      return rows.length === 1;
    },
    async startWorker(concurrency, role, handler) {
      const boss = new PgBoss({ connectionString: url, schema, useListenNotify: true });
      boss.on("error", report);
      await boss.start();
      const options = role.holder
        ? { localConcurrency: 1, batchSize: 1 }
        : { ...pgBossSplit(concurrency), burstWhenBatchFull: true };
      await boss.work<{ i: number }>(role.keyed ? KEYED : PLAIN, options, async (jobs) => {
        for (const job of jobs) await handler(job.data.i);
      });
      return { stop: () => boss.stop({ graceful: true, close: true }) };
    },
    async teardown() {
      await producer?.stop({ graceful: true, close: true });
    },
  };
}

// ---------------------------------------------------------------- runs

/**
 * Starts a worker on jobs already queued and times until the database says
 * `target` of them (`which`) are finished: polled every 200 ms while handlers
 * are still being called, every 5 ms once `target` calls were seen.
 */
async function timeRun(
  system: FlowSystem,
  concurrency: number,
  role: WorkerRole,
  which: "all" | "others",
  totals: { all: number; others: number; hot: number },
  onCall: Handler = () => {},
): Promise<FlowRun & { stop(): Promise<void> }> {
  const target = totals[which];
  const calls = new HandlerCalls(target);
  const t0 = performance.now();
  const worker = await system.startWorker(concurrency, role, (i) => {
    calls.call();
    return onCall(i);
  });
  const startupMs = performance.now() - t0;
  let finished = 0;
  let completed = true;
  try {
    for (;;) {
      finished = await system.finished(which, totals);
      if (finished >= target) break;
      if (performance.now() - t0 > RUN_TIMEOUT_MS) {
        completed = false;
        break;
      }
      await calls.pause();
    }
  } catch (error) {
    await worker.stop();
    throw error;
  }
  const ms = performance.now() - t0;
  return {
    jobs: target,
    ms: round(ms, 1),
    perSecond: round(finished / (ms / 1000)),
    startupMs: round(startupMs, 1),
    handlerCalls: calls.count,
    finished,
    completed,
    stop: () => worker.stop(),
  };
}

async function plainRun(system: FlowSystem, admin: pg.Pool, p: FlowParams, keyed: boolean): Promise<FlowRun> {
  await system.reset();
  const jobs = Array.from({ length: p.jobs }, (_, i) => ({ i, key: keyed ? keyOf(i, p.keys) : null }));
  await system.enqueue(jobs, keyed, p.bulkBatch);
  await vacuum(admin, system.schema);
  const { stop, ...result } = await timeRun(system, p.concurrency, { keyed }, "all", {
    all: p.jobs,
    others: p.jobs,
    hot: 0,
  });
  await stop();
  return result;
}

/**
 * The hot key: its first job is claimed by a holder worker (concurrency 1)
 * whose handler does not return; then the hot key's backlog and the others
 * are inserted (the backlog first, so it is ahead of them in every order),
 * and the measured worker is started. When the others are done, the database
 * must show no hot-key job finished and the holder still running.
 */
async function hotKeyRun(system: FlowSystem, admin: pg.Pool, p: FlowParams): Promise<HotKeyRun> {
  await system.reset();
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => (release = resolve));
  let holderStarted: () => void = () => {};
  const started = new Promise<void>((resolve) => (holderStarted = resolve));
  await system.enqueue([{ i: HOLDER, key: HOT_KEY }], true, 1);
  const holder = await system.startWorker(1, { keyed: true, holder: true }, async (i) => {
    if (i !== HOLDER) return; // once released, the holder worker may take more of the hot key: no-ops
    holderStarted();
    await released;
  });
  let measured: (FlowRun & { stop(): Promise<void> }) | undefined;
  try {
    await withDeadline(started, 30_000, `${system.name}: the hot key's holder never started`);
    const deadline = performance.now() + 30_000;
    while (!(await system.holderRunning())) {
      if (performance.now() > deadline)
        throw new Error(`${system.name}: the database never showed the hot key's holder running`);
      await sleep(20);
    }
    const hot = Array.from({ length: p.hotJobs }, (_, n) => ({ i: HOT_BASE + n, key: HOT_KEY }));
    const others = Array.from({ length: p.jobs }, (_, i) => ({ i, key: keyOf(i, p.keys) }));
    await system.enqueue(hot, true, p.bulkBatch);
    await system.enqueue(others, true, p.bulkBatch);
    await vacuum(admin, system.schema);
    let hotCalls = 0;
    const totals = { all: p.jobs + p.hotJobs + 1, others: p.jobs, hot: p.hotJobs + 1 };
    measured = await timeRun(system, p.concurrency, { keyed: true }, "others", totals, (i) => {
      if (i >= HOT_BASE) hotCalls++;
    });
    const { stop: _stop, ...result } = measured;
    const hotFinished = await system.finished("hot", totals);
    const holderRunning = await system.holderRunning();
    const problems: string[] = [];
    if (!result.completed)
      problems.push(`only ${result.finished} of ${p.jobs} others finished within ${RUN_TIMEOUT_MS / 1000} s`);
    if (hotFinished !== 0) problems.push(`${hotFinished} jobs of the held key finished`);
    if (hotCalls !== 0) problems.push(`${hotCalls} jobs of the held key ran`);
    if (!holderRunning) problems.push("the holder was no longer running");
    return {
      ...result,
      hotJobs: p.hotJobs,
      hotFinished,
      hotHandlerCalls: hotCalls,
      holderRunning,
      verified: problems.length === 0,
      problems,
    };
  } finally {
    release();
    await measured?.stop();
    await holder.stop();
  }
}

/** Runs behind a within-system ratio (see FlowParams.pairs). */
interface Paired {
  pairs: RunPair[];
  measuredRuns: FlowRun[];
  baselineRuns: FlowRun[];
  /** The median of the pairs' ratios. */
  ratio: number;
}

/**
 * `count` pairs of a measured run and its baseline, back to back; which goes first alternates from
 * pair to pair (`first` shifts it), so neither always meets the host as the other left it.
 */
async function runPairs(
  count: number,
  measured: () => Promise<FlowRun>,
  baseline: () => Promise<FlowRun>,
  log: (line: string) => void,
  first = 0,
): Promise<Paired> {
  const out: Paired = { pairs: [], measuredRuns: [], baselineRuns: [], ratio: NaN };
  for (let k = 0; k < count; k++) {
    let m: FlowRun;
    let b: FlowRun;
    if ((k + first) % 2 === 0) {
      m = await measured();
      b = await baseline();
    } else {
      b = await baseline();
      m = await measured();
    }
    const ratio = round(m.perSecond / b.perSecond, 3);
    log(`${fmt(m.perSecond)} against ${fmt(b.perSecond)} jobs/s (${fmtRatio(ratio)})`);
    out.pairs.push({ measured: m.perSecond, baseline: b.perSecond, ratio });
    out.measuredRuns.push(m);
    out.baselineRuns.push(b);
  }
  out.ratio = median(out.pairs.map((x) => x.ratio));
  return out;
}

function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what} (${ms} ms)`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

function checkRun(label: string, run: FlowRun, problems: string[]): void {
  if (!run.completed)
    problems.push(`${label}: only ${run.finished} of ${run.jobs} finished within ${RUN_TIMEOUT_MS / 1000} s`);
  else if (run.finished !== run.jobs) problems.push(`${label}: ${run.finished} finished, expected ${run.jobs}`);
}

async function rateLimitRuns(
  gd: GenDurableFlow,
  admin: pg.Pool,
  p: FlowParams,
  log: (line: string) => void,
): Promise<RateLimitResult> {
  const problems: string[] = [];
  // The steps that draw run code the flow warm-up did not: they warm up too, untimed, so that the
  // limited run is not timed against a warm baseline while its own code still compiles.
  log(`  gen-durable: ${p.warmupJobs} no-op jobs with rateLimit { name: "free" }, untimed (warm-up)`);
  await gd.reset();
  await gd.enqueueKind("free", p.warmupJobs, p.bulkBatch);
  const warm = p.warmupJobs;
  await (await timeRun(gd, p.concurrency, { keyed: false }, "all", { all: warm, others: warm, hot: 0 })).stop();
  const withLimit = async (): Promise<FlowRun> => {
    await gd.reset();
    await gd.enqueueKind("free", p.jobs, p.bulkBatch);
    await vacuum(admin, gd.schema);
    const { stop, ...run } = await timeRun(gd, p.concurrency, { keyed: false }, "all", {
      all: p.jobs,
      others: p.jobs,
      hot: 0,
    });
    await stop();
    return run;
  };
  log(
    `  gen-durable: ${p.pairs} pairs of ${p.jobs} no-op jobs with rateLimit { name: "free" } (limit 1e9 per second: never short) and without`,
  );
  const paired = await runPairs(
    p.pairs,
    withLimit,
    () => plainRun(gd, admin, p, false),
    (line) => log(`    ${line}`),
  );

  log(`  gen-durable: ${p.throttleJobs} no-op jobs limited to ${p.throttleRate}/s (burst ${p.throttleRate})`);
  const throttled = await throttledRun(
    gd,
    admin,
    p,
    "throttle",
    p.throttleJobs,
    { limit: p.throttleRate, burst: p.throttleRate },
    1,
  );
  log(
    `    after the burst ${fmt(throttled.achievedPerSecond)} jobs/s (${fmtRatio(throttled.achievedVsLimit)} of ${p.throttleRate}); most in any 1 s: ${throttled.maxStartsInOnePeriod} (bound ${throttled.bound}); ` +
      `${throttled.postponementsPerRun} postponements per run`,
  );
  const { limit, burst } = KEYED_THROTTLE;
  log(
    `  gen-durable: ${p.keyedThrottleJobs} no-op jobs over ${p.keyedThrottleKeys} keys limited to ${limit}/s (burst ${burst})`,
  );
  const keyedThrottled = {
    ...(await throttledRun(gd, admin, p, "keyedThrottle", p.keyedThrottleJobs, KEYED_THROTTLE, p.keyedThrottleKeys)),
    keys: p.keyedThrottleKeys,
  };
  log(
    `    after the burst ${fmt(keyedThrottled.achievedPerSecond)} jobs/s (${fmtRatio(keyedThrottled.achievedVsLimit)} of ${limit}); most in any 1 s: ${keyedThrottled.maxStartsInOnePeriod} (bound ${keyedThrottled.bound}); ` +
      `${keyedThrottled.postponementsPerRun} postponements per run (at most ${keyedThrottled.mostPostponementsOfOne} for one job)`,
  );

  for (const run of paired.baselineRuns) checkRun("rate limit baseline", run, problems);
  for (const run of paired.measuredRuns) checkRun("rate limit never throttled", run, problems);
  for (const [label, run] of [
    ["throttled", throttled],
    ["keyed throttled", keyedThrottled],
  ] as const) {
    checkRun(`rate limit ${label}`, run, problems);
    if (run.jobs <= run.burst)
      problems.push(
        `${label} run: ${run.jobs} jobs fit in the burst of ${run.burst}, so no rate is measured (raise its job count)`,
      );
    // Handler starts trail the token draws by a variable delay, so a window may see a few more than the bound; 5% is noise, more is a finding.
    if (run.maxStartsInOnePeriod > run.bound * 1.05)
      problems.push(
        `${label} run: ${run.maxStartsInOnePeriod} handler starts within one second, above burst + limit = ${run.bound}`,
      );
  }
  return {
    baseline: medianRun(paired.baselineRuns),
    neverThrottled: medianRun(paired.measuredRuns),
    overheadRatio: paired.ratio,
    pairs: paired.pairs,
    throttled,
    keyedThrottled,
    verified: problems.length === 0,
    problems,
  };
}

/** One throttled run: `jobs` no-op jobs of `kind` queued, then a worker started; paced starts and postponements measured. */
async function throttledRun(
  gd: GenDurableFlow,
  admin: pg.Pool,
  p: FlowParams,
  kind: "throttle" | "keyedThrottle",
  jobs: number,
  bucket: { limit: number; burst: number },
  keys: number,
): Promise<ThrottledRun> {
  await gd.reset();
  await gd.enqueueKind(kind, jobs, p.bulkBatch, keys);
  await vacuum(admin, gd.schema);
  gd.postponed.clear();
  const starts: number[] = [];
  const { stop, ...run } = await timeRun(
    gd,
    p.concurrency,
    { keyed: kind === "keyedThrottle" },
    "all",
    { all: jobs, others: jobs, hot: 0 },
    () => {
      starts.push(performance.now());
    },
  );
  await stop();
  starts.sort((a, b) => a - b);
  const span = starts.length > 1 ? starts[starts.length - 1]! - starts[0]! : NaN;
  const achieved = starts.length > bucket.burst ? (starts.length - bucket.burst) / (span / 1000) : NaN;
  // Sliding one-period window over the handler starts (two pointers).
  let most = 0;
  for (let lo = 0, hi = 0; hi < starts.length; hi++) {
    while (starts[hi]! - starts[lo]! >= 1000) lo++;
    most = Math.max(most, hi - lo + 1);
  }
  const postponements = [...gd.postponed.values()].reduce((sum, n) => sum + n, 0);
  return {
    ...run,
    limitPerSecond: bucket.limit,
    burst: bucket.burst,
    achievedPerSecond: round(achieved, 1),
    achievedVsLimit: round(achieved / bucket.limit, 3),
    maxStartsInOnePeriod: most,
    bound: bucket.burst + bucket.limit,
    postponements,
    postponementsPerRun: round(postponements / jobs, 2),
    mostPostponementsOfOne: Math.max(0, ...gd.postponed.values()),
  };
}

const FACTORIES: Record<(typeof FLOW_SYSTEMS)[number], (url: string, admin: pg.Pool, p: FlowParams) => FlowSystem> = {
  "gen-durable": (url, admin, p) => genDurableFlow(url, admin, p.throttleRate),
  "graphile-worker": (url, admin) => graphileFlow(url, admin, "defaults"),
  "graphile-worker-batched": (url, admin) => graphileFlow(url, admin, "batched"),
  "pg-boss": (url, admin) => pgBossFlow(url, admin),
};

/**
 * Runs the phase for the given system keys (main.ts's BENCH_SYSTEMS; keys this
 * phase does not know are skipped), run kind by run kind with the order of the
 * systems rotating, as main.ts does, so a change in the host's load lands on
 * every system's figure for a kind alike.
 */
export async function benchFlow(
  url: string,
  admin: pg.Pool,
  keys: readonly string[],
  p: FlowParams,
  log: (line: string) => void,
): Promise<FlowResult> {
  const t0 = performance.now();
  const loadStart = loadavg().map((x) => round(x, 2));
  const known = keys.filter((k): k is (typeof FLOW_SYSTEMS)[number] => (FLOW_SYSTEMS as readonly string[]).includes(k));
  const systems = known.map((k) => FACTORIES[k](url, admin, p));
  const step = (s: FlowSystem, what: string) => log(`  ${s.name}: ${what}`);
  let phase = 0;
  const rotated = () => {
    const shift = phase++ % systems.length;
    return [...systems.slice(shift), ...systems.slice(0, shift)];
  };
  const partial = new Map<FlowSystem, Partial<FlowSystemResult>>(
    systems.map((s) => [s, { name: s.name, schema: s.schema, config: s.config }]),
  );
  let rateLimit: RateLimitResult | null = null;
  const keyedPairs = new Map<FlowSystem, Omit<Paired, "ratio">>(
    systems.map((s) => [s, { pairs: [], measuredRuns: [], baselineRuns: [] }]),
  );

  for (const s of systems) {
    await admin.query(`drop schema if exists ${s.schema} cascade`);
    await s.setup();
  }
  try {
    for (const s of rotated()) {
      step(s, `flow warm-up (about ${p.warmupMs / 1000} s of unkeyed processing, then ${p.warmupJobs} keyed)`);
      const unkeyed = await warmUp(async (n) => (await plainRun(s, admin, { ...p, jobs: n }, false)).ms, {
        budgetMs: p.warmupMs,
        first: p.warmupJobs,
        most: p.jobs,
        total: 3 * p.jobs,
      });
      await plainRun(s, admin, { ...p, jobs: p.warmupJobs }, true);
      step(s, `  warmed up on ${unkeyed} unkeyed jobs and ${p.warmupJobs} keyed`);
    }
    for (let pair = 0; pair < p.pairs; pair++) {
      for (const s of rotated()) {
        step(
          s,
          `flow, pair ${pair + 1} of ${p.pairs}: ${p.jobs} jobs over ${p.keys} keys, and ${p.jobs} unkeyed, at concurrency ${p.concurrency}`,
        );
        const one = await runPairs(
          1,
          () => plainRun(s, admin, p, true),
          () => plainRun(s, admin, p, false),
          (line) => step(s, `  ${line}`),
          pair,
        );
        const all = keyedPairs.get(s)!;
        all.pairs.push(...one.pairs);
        all.measuredRuns.push(...one.measuredRuns);
        all.baselineRuns.push(...one.baselineRuns);
      }
    }
    for (const s of systems) {
      const all = keyedPairs.get(s)!;
      Object.assign(partial.get(s)!, {
        unkeyed: medianRun(all.baselineRuns),
        keyed: medianRun(all.measuredRuns),
        keyedPairs: all.pairs,
        keyedRatio: median(all.pairs.map((x) => x.ratio)),
      });
    }
    for (const s of rotated()) {
      step(
        s,
        `flow: hot key held, ${p.hotJobs} queued behind it; ${p.jobs} jobs over ${p.keys} other keys at concurrency ${p.concurrency}`,
      );
      const r = await hotKeyRun(s, admin, p);
      partial.get(s)!.hotKey = r;
      step(
        s,
        `  others ${fmt(r.perSecond)} jobs/s${r.verified ? "; verified" : `; NOT VERIFIED: ${r.problems.join("; ")}`}`,
      );
    }
    const gd = systems.find((s) => s.name === "gen-durable") as GenDurableFlow | undefined;
    if (gd) rateLimit = await rateLimitRuns(gd, admin, p, log);
  } finally {
    for (const s of systems)
      await s.teardown().catch((error: unknown) => log(`  note: ${s.name} teardown failed: ${String(error)}`));
    for (const s of systems) await admin.query(`drop schema if exists ${s.schema} cascade`).catch(() => {});
  }

  const results = systems.map((s) => {
    const r = partial.get(s)! as FlowSystemResult;
    const problems: string[] = [];
    const all = keyedPairs.get(s)!;
    for (const run of all.baselineRuns) checkRun("unkeyed", run, problems);
    for (const run of all.measuredRuns) checkRun("keyed", run, problems);
    problems.push(...r.hotKey.problems.map((x) => `hot key: ${x}`));
    return {
      ...r,
      hotOthersVsUnkeyed: round(r.hotKey.perSecond / r.unkeyed.perSecond, 3),
      hotOthersVsKeyed: round(r.hotKey.perSecond / r.keyed.perSecond, 3),
      verified: problems.length === 0,
      problems,
    };
  });
  const gdResult = results.find((r) => r.name === "gen-durable");
  const peers = results.filter((r) => r !== gdResult);
  const kinds = [
    { metric: "unkeyed", label: `unkeyed, c=${p.concurrency}`, value: (r: FlowSystemResult) => r.unkeyed.perSecond },
    {
      metric: "keyed",
      label: `${fmt(p.keys)} keys × ${fmt(p.jobs / p.keys)} jobs, c=${p.concurrency}`,
      value: (r: FlowSystemResult) => r.keyed.perSecond,
    },
    {
      metric: "hotKeyOthers",
      label: `hot key held (${fmt(p.hotJobs)} behind it): the others`,
      value: (r: FlowSystemResult) => r.hotKey.perSecond,
    },
  ];
  const comparisons = gdResult
    ? kinds.map((k) => ({
        metric: k.metric,
        label: k.label,
        "gen-durable": k.value(gdResult),
        peers: peers.map((peer) => ({
          name: peer.name,
          value: k.value(peer),
          ratio: round(k.value(gdResult) / k.value(peer), 3),
        })),
      }))
    : [];
  const notes = [
    "Keys: job i gets key k(i mod K), so a key's jobs are spread through the queue (for graphile-worker the key is the queueName, for pg-boss the singletonKey).",
    "pg-boss has per-key exclusivity: a queue with policy 'singleton' allows one active job per singletonKey (unique index job_i2 on (name, coalesce(singleton_key, '')) where state = 'active'; fetch skips keys that have one and takes one job per key per batch). Its unkeyed jobs are in a separate standard queue, because in a singleton queue all jobs without a key share one slot. pg-boss 12 also offers 'key_strict_fifo' queues and groupConcurrency: 1 at work(); they are not measured.",
    "Hot-key run: the others are keyed too (K other keys), so pg-boss can run them in the same singleton queue; the holder's worker (concurrency 1) runs beside the measured one, so the measured worker has all C slots.",
    "The hot key's backlog is inserted before the others, so in every system's fetch order it is ahead of them: a fetch that scans past held work pays for it.",
  ];
  const goal = gdResult
    ? {
        minRatio: 0.5,
        keyedRatio: gdResult.keyedRatio,
        hotOthersVsUnkeyed: gdResult.hotOthersVsUnkeyed,
        hotOthersVsKeyed: gdResult.hotOthersVsKeyed,
        met: gdResult.keyedRatio >= 0.5,
      }
    : null;
  return {
    parameters: p,
    loadAverage: { start: loadStart, end: loadavg().map((x) => round(x, 2)) },
    systems: results,
    comparisons,
    goal,
    rateLimit,
    notes,
    totalSeconds: round((performance.now() - t0) / 1000, 1),
  };
}

/** The console section, in the style of main.ts's tables. */
export function printFlow(flow: FlowResult, log: (line: string) => void): void {
  const p = flow.parameters;
  log("");
  log(
    `Flow control (${fmt(p.jobs)} no-op jobs per run, concurrency ${p.concurrency}; jobs/s from the worker's start to the last finished; ` +
      `ratios are gen-durable ÷ peer, and keyed ÷ unkeyed within each system):`,
  );
  for (const c of flow.comparisons) {
    log(
      `${c.label}: gen-durable ${fmt(c["gen-durable"])} jobs/s` +
        c.peers.map((x) => ` | ${x.name} ${fmt(x.value)} (${fmtRatio(x.ratio)})`).join("") +
        "   [higher is better]",
    );
  }
  log(
    `keyed ÷ unkeyed (median of ${p.pairs} pairs): ` +
      flow.systems.map((s) => `${s.name} ${fmtRatio(s.keyedRatio)}`).join(" | ") +
      `;  hot-key others ÷ unkeyed: ` +
      flow.systems.map((s) => `${s.name} ${fmtRatio(s.hotOthersVsUnkeyed)}`).join(" | ") +
      `;  hot-key others ÷ keyed (1× = the held key's backlog costs the others nothing): ` +
      flow.systems.map((s) => `${s.name} ${fmtRatio(s.hotOthersVsKeyed)}`).join(" | "),
  );
  for (const s of flow.systems)
    if (!s.verified) log(`  WARNING: ${s.name} flow runs not verified: ${s.problems.join("; ")}`);
  if (flow.systems.length > 0 && flow.systems.every((s) => s.verified)) {
    log(
      `verified from the database: every run's jobs finished; with the hot key held, none of its ${fmt(p.hotJobs)} queued jobs ran and its holder was still running`,
    );
  }
  if (flow.goal) {
    const g = flow.goal;
    log(
      `issue 5 goal (keyed within 2× of unkeyed, ratio ≥ ${g.minRatio}): keyed ÷ unkeyed ${fmtRatio(g.keyedRatio)} → ${g.met ? "met" : "NOT met"}` +
        ` (beside it: hot-key others ÷ unkeyed ${fmtRatio(g.hotOthersVsUnkeyed)}, ÷ keyed ${fmtRatio(g.hotOthersVsKeyed)})`,
    );
  }
  const rl = flow.rateLimit;
  if (rl) {
    log(
      `rate limit, never short (limit 1e9/s): ${fmt(rl.neverThrottled.perSecond)} jobs/s vs ${fmt(rl.baseline.perSecond)} without rateLimit (median runs; ` +
        `median of ${rl.pairs.length} pairs' ratios ${fmtRatio(rl.overheadRatio)}: ${rl.pairs.map((x) => fmtRatio(x.ratio)).join(", ")}); ` +
        `throttled to ${rl.throttled.limitPerSecond}/s over ${fmt(rl.throttled.jobs)} jobs: ${fmt(rl.throttled.achievedPerSecond)}/s after the burst of ${rl.throttled.burst} ` +
        `(${fmtRatio(rl.throttled.achievedVsLimit)} of the limit), ${fmt(rl.throttled.perSecond)}/s overall; most starts in any 1 s: ${rl.throttled.maxStartsInOnePeriod} (bound ${rl.throttled.bound}); ` +
        `${rl.throttled.postponementsPerRun} postponements per run` +
        (rl.verified ? "" : `  ← NOT VERIFIED: ${rl.problems.join("; ")}`),
    );
    const k = rl.keyedThrottled;
    log(
      `rate limit over ${k.keys} keys, ${k.limitPerSecond}/s burst ${k.burst}, ${fmt(k.jobs)} jobs: ${fmt(k.achievedPerSecond)}/s after the burst (${fmtRatio(k.achievedVsLimit)} of the limit); ` +
        `postponements per run ${k.postponementsPerRun} (at most ${k.mostPostponementsOfOne} for one job; 1 is the least a job that waits can cost)`,
    );
  }
}

/**
 * `BENCH_ONLY=flow`: the other phases did not run, so the last full run's
 * figures in the results file are kept and only its `flow` key is replaced
 * (with the environment of this run beside it, since it is a different run).
 */
export async function mergeFlowInto(
  path: string,
  flow: FlowResult,
  environment: Record<string, unknown>,
): Promise<"merged" | "created"> {
  let json: Record<string, unknown> = {};
  let merged = false;
  try {
    json = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
    merged = true;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "ENOENT")
      throw new Error(`BENCH_ONLY=flow: cannot merge into ${path}: ${(error as Error).message}`);
  }
  json.flow = { ...flow, runAlone: { generatedAt: new Date().toISOString(), environment } };
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, JSON.stringify(json, null, 2) + "\n");
  return merged ? "merged" : "created";
}
