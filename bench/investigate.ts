/**
 * Where does processing time go? A diagnostic companion to main.ts (not part of
 * `npm run bench`): runs the processing phase for gen-durable and its peers
 * with every pg client instrumented, and reports per job
 *   - round trips, by statement kind, with their mean latency and batch size,
 *   - CPU spent in this Node process and in Postgres (from /proc, when the
 *     server is local), so one can tell a round-trip-bound engine from a
 *     CPU-bound one on a small machine,
 * plus a micro-benchmark of gen-durable's claim and complete statements alone,
 * at several batch sizes, to separate the fixed cost of a round trip from the
 * per-row cost.
 *
 *   bash bench/run.sh --investigate      (BENCH_JOBS, BENCH_INVESTIGATE=a,b,… to choose)
 *
 * `gd-fillfactor` (not in the default set) runs three alternating pairs at c=32: `instances` at
 * fillfactor 80, as before migration 33, and as the migrations leave it.
 *
 * `gd-rate-limit` (not in the default set) runs six alternating pairs at c=32: the no-op job, and
 * the same job with `rateLimit: { name: "free" }` where free = { limit: 1e9, period: "1s" } (never
 * short), on an engine that declares the limit in both; it prints each pair's ratio, limited ÷ not.
 *
 * `gd-keyed` (not in the default set) runs six alternating pairs at c=32: the no-op job, and the
 * same job over JOBS / 10 concurrency keys of limit 1 (ten jobs a key, as the flow phase's keyed
 * run); it prints each pair's ratio, keyed ÷ unkeyed.
 *
 * `gd-delete-done` (not in the default set) prices keeping finished rows: three alternating pairs at
 * c=32, the group commit as migrated and one rewritten to delete the rows of done outcomes, as
 * graphile-worker does with its jobs (an experiment: the contract keeps finished instances).
 */
import { readFileSync, readdirSync } from "node:fs";
import { Logger, run, runMigrations } from "graphile-worker";
import { PgBoss } from "pg-boss";
import pg from "pg";
import { z } from "zod";
import { startDevDatabase } from "../dev/postgres.js";
import { defineJob, GenDurable, migrate } from "./engine.js";
import { claimQueries } from "../src/sql/claims.js";
import { pgBossSplit } from "./systems/pg-boss.js";
import { fmt, HandlerCalls, median } from "./util.js";

const JOBS = Number(process.env.BENCH_JOBS ?? 20_000);
const DEEP_QUEUE = Number(process.env.BENCH_DEEP_QUEUE ?? 200_000);
/**
 * Runs of each system before its first measured one (BENCH_INVESTIGATE_WARMUP, default 2): a
 * process is not at its steady pace at once (see warmUp in util.ts). Without them the first
 * section measured paid gen-durable's warm-up: c=10 always ran first and showed 10–15 µs of Node
 * CPU a job more than c=32.
 */
const WARMUP_RUNS = Number(process.env.BENCH_INVESTIGATE_WARMUP ?? 2);
/** Set during warm-up runs: report() prints one line for them, reportServerTime nothing. */
let warmingUp = false;

async function warmedUp(run: () => Promise<unknown>): Promise<void> {
  warmingUp = true;
  try {
    for (let i = 0; i < WARMUP_RUNS; i++) await run();
  } finally {
    warmingUp = false;
  }
}
const silent = new Logger(() => () => {});

// ------------------------------------------------------------------ instruments

interface KindStats {
  n: number;
  ms: number;
  rows: number;
}

/** Counts and times every statement sent by any client of `pool`, classified by its text. */
function instrument(pool: pg.Pool) {
  const stats = new Map<string, KindStats>();
  let enabled = false;
  pool.on("connect", (client) => {
    const original = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      const first = args[0];
      const text = typeof first === "string" ? first : ((first as { text?: string } | null)?.text ?? "");
      if (!enabled) return original(...args);
      const started = performance.now();
      const record = (r: { rowCount?: number | null } | undefined) => {
        const kind = classify(text);
        const s = stats.get(kind) ?? { n: 0, ms: 0, rows: 0 };
        s.n++;
        s.ms += performance.now() - started;
        s.rows += r?.rowCount ?? 0;
        stats.set(kind, s);
      };
      // pg.Pool#query calls client.query(text, values, callback): wrap the callback form too.
      const last = args[args.length - 1];
      if (typeof last === "function") {
        args[args.length - 1] = (error: unknown, r: { rowCount?: number | null } | undefined) => {
          record(r);
          (last as (e: unknown, r: unknown) => void)(error, r);
        };
        return original(...args);
      }
      const result = original(...args);
      if (!(result instanceof Promise)) return result;
      return result.then((r: { rowCount?: number | null }) => {
        record(r);
        return r;
      });
    };
  });
  return {
    stats,
    start() {
      stats.clear();
      enabled = true;
    },
    stop() {
      enabled = false;
    },
  };
}

function classify(text: string): string {
  const t = text.replace(/\s+/g, " ").toLowerCase();
  // gen-durable
  if (t.includes(".claim_rows($1, $2")) return "gd claim";
  if (t.includes("set attempt = i.attempt + 1, claimed_ahead = false")) return "gd start (claimed ahead)";
  if (t.includes(".complete_outcomes($1::json")) return "gd complete (group commit)";
  if (t.includes("pg_notify($1, q)")) return "gd notify";
  if (t.includes("lease_expires_at = now() +") && t.includes("renewable")) return "gd lease renew";
  if (t.includes("lease_expires_at < now()")) return "gd reaper";
  if (t.includes("where status = 'awaiting' and run_at <= now()")) return "gd await timeouts";
  // graphile-worker (function names of its schema)
  const gw = /(get_job|complete_job|fail_job|add_job|reset_locked|force_unlock|get_jobs|complete_jobs)/.exec(t);
  if (gw) return `gw ${gw[1]}`;
  if (t.startsWith("listen") || t.startsWith("unlisten")) return "listen";
  if (t === "begin" || t === "commit" || t === "rollback") return "tx control";
  return `other: ${t.slice(0, 50)}`;
}

/** CPU seconds (user+sys) of this process. */
const nodeCpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};

/** CPU ms of the whole Postgres server: postmaster (incl. reaped children) + live children; null if not local. */
function pgCpuMs(postmasterPid: number | null): number | null {
  if (postmasterPid === null) return null;
  const tick = 1000 / 100; // USER_HZ is 100 on Linux
  const fields = (pid: number) => {
    const raw = readFileSync(`/proc/${pid}/stat`, "utf8");
    const rest = raw.slice(raw.lastIndexOf(")") + 2).split(" ");
    // rest[0] is field 3 (state): ppid=4, utime=14, stime=15, cutime=16, cstime=17
    return {
      ppid: Number(rest[1]),
      utime: Number(rest[11]),
      stime: Number(rest[12]),
      cutime: Number(rest[13]),
      cstime: Number(rest[14]),
    };
  };
  try {
    const master = fields(postmasterPid);
    let total = master.utime + master.stime + master.cutime + master.cstime;
    for (const entry of readdirSync("/proc")) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const f = fields(Number(entry));
        if (f.ppid === postmasterPid) total += f.utime + f.stime;
      } catch {
        // process exited meanwhile
      }
    }
    return total * tick;
  } catch {
    return null;
  }
}

/**
 * Each run drops its schema and migrates it anew, leaving dead rows in the system catalogs; with
 * autovacuum off (the local server's setting) they pile up run after run and slow every catalog
 * lookup of the later runs. Vacuumed before each run, so the order of runs does not weigh on them.
 */
async function vacuumCatalogs(admin: pg.Pool): Promise<void> {
  const { rows } = await admin.query<{ t: string }>(
    "select format('%I.%I', schemaname, relname) as t from pg_stat_sys_tables where schemaname = 'pg_catalog' and n_dead_tup > 0",
  );
  if (rows.length > 0) await admin.query(`vacuum ${rows.map((r) => r.t).join(", ")}`);
}

async function postmasterPid(admin: pg.Pool): Promise<number | null> {
  const { rows } = await admin.query<{ pid: number }>(
    "select pid from pg_stat_activity where backend_type = 'checkpointer'",
  );
  if (!rows[0]) return null;
  try {
    const raw = readFileSync(`/proc/${rows[0].pid}/stat`, "utf8");
    return Number(raw.slice(raw.lastIndexOf(")") + 2).split(" ")[1]);
  } catch {
    return null;
  }
}

// ------------------------------------------------------------------ runs

interface Run {
  label: string;
  jobs: number;
  ms: number;
  /** WAL written by the whole server during the run, per job: a load-independent measure of database work. */
  walBytes: number;
  nodeCpuMs: number;
  pgCpuMs: number | null;
  stats: Map<string, KindStats>;
}

function report(r: Run): void {
  const perJob = (x: number) => x / r.jobs;
  if (warmingUp) {
    console.log(
      `\n${r.label}, warm-up (untimed): ${fmt(r.jobs / (r.ms / 1000))} jobs/s, Node CPU ${fmt(perJob(r.nodeCpuMs) * 1000)} µs/job`,
    );
    return;
  }
  const cpu =
    `Node CPU ${fmt(perJob(r.nodeCpuMs) * 1000)} µs/job` +
    (r.pgCpuMs === null ? "" : `, Postgres CPU ${fmt(perJob(r.pgCpuMs) * 1000)} µs/job`);
  const busy = ((r.nodeCpuMs + (r.pgCpuMs ?? 0)) / r.ms).toFixed(2);
  console.log(
    `\n${r.label}: ${fmt(r.jobs / (r.ms / 1000))} jobs/s; ${cpu}; CPU busy ${busy} of 2 cores; WAL ${fmt(perJob(r.walBytes))} B/job`,
  );
  const total = [...r.stats.values()].reduce((a, s) => a + s.n, 0);
  if (total > 0) console.log(`  round trips: ${fmt(total / r.jobs)} per job (${total} statements)`);
  for (const [kind, s] of [...r.stats].sort((a, b) => b[1].n - a[1].n)) {
    console.log(
      // Statement time ÷ run time: how busy that kind of statement kept its connection(s) — above 1
      // when several run at once (the group commit writes up to two batches at a time).
      `    ${kind.padEnd(34)} ${String(s.n).padStart(6)} × ${fmt(s.ms / s.n).padStart(6)} ms   rows/stmt ${fmt(s.rows / s.n).padEnd(6)} in flight ${(s.ms / r.ms).toFixed(2)}`,
    );
  }
}

async function measure(
  label: string,
  admin: pg.Pool,
  pmPid: number | null,
  done: () => Promise<boolean>,
  start: () => Promise<() => Promise<void>>,
  inst?: ReturnType<typeof instrument>,
): Promise<Run> {
  const lsn0 = (await admin.query<{ l: string }>("select pg_current_wal_insert_lsn()::text as l")).rows[0]!.l;
  const cpu0 = nodeCpuMs();
  const pg0 = pgCpuMs(pmPid);
  inst?.start();
  calls = new HandlerCalls(JOBS);
  const t0 = performance.now();
  const stop = await start();
  // The database is asked once every handler has been called, then every 5 ms for the last commits
  // (as main.ts does). A count every 20 ms from the start read all of gen-durable's finished rows
  // each time, more as the run went on, where the peers' counts shrank with their tables: 2–3 µs a
  // job of the Postgres CPU reported for gen-durable at c=32 was the harness's.
  while (!(await done())) await calls.pause();
  const ms = performance.now() - t0;
  inst?.stop();
  const cpu1 = nodeCpuMs();
  const pg1 = pgCpuMs(pmPid);
  const wal = Number(
    (
      await admin.query<{ d: string }>("select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn)::text as d", [
        lsn0,
      ])
    ).rows[0]!.d,
  );
  await stop();
  const r = {
    label,
    jobs: JOBS,
    ms,
    walBytes: wal,
    nodeCpuMs: cpu1 - cpu0,
    pgCpuMs: pg0 === null || pg1 === null ? null : pg1 - pg0,
    stats: new Map(inst?.stats ?? []),
  };
  report(r);
  return r;
}

/** The handler calls of the run being measured (see measure). */
let calls = new HandlerCalls(JOBS);

const Noop = defineJob({
  name: "Noop",
  args: z.object({ i: z.number() }),
  perform: () => {
    calls.call();
    return null;
  },
});
/** The same job drawing from a limit that is never short: the cost of the draw alone. */
const NoopLimited = defineJob({
  name: "NoopLimited",
  args: z.object({ i: z.number() }),
  rateLimit: { name: "free" },
  perform: () => {
    calls.call();
    return null;
  },
});
const RATE_LIMITS = { free: { limit: 1e9, period: "1s" } };

/**
 * Rewrites `schema`'s group commit (complete_outcomes, migration 32) to delete the rows of done
 * outcomes instead of updating them, fenced the same way: what keeping a finished row costs.
 * Every outcome of the no-op jobs this is run with is a done.
 */
async function deleteDoneRows(admin: pg.Pool, schema: string): Promise<void> {
  const { rows } = await admin.query<{ d: string }>(
    `select pg_get_functiondef('${schema}.complete_outcomes(json, boolean)'::regprocedure) as d`,
  );
  const text = rows[0]!.d;
  const start = text.indexOf("won as (");
  const end = text.indexOf("history as (");
  if (start < 0 || end < start)
    throw new Error("gd-delete-done: complete_outcomes no longer has its won and history steps");
  const won = `won as (
    delete from ${schema}.instances i using input x
    where i.id = x.id and i.claim_token = x.token and i.status || '' = 'running' and (select n from keys_locked) >= 0
    returning i.id, i.parent_id, i.concurrency_key, x.status, x.from_step, x.to_step, x.outcome,
              x.attempt as from_attempt, x.duration_ms, x.hist_error
  ),
  `;
  await admin.query(text.slice(0, start) + won + text.slice(end));
}

interface GenDurableRunOptions {
  /** Engines in this process, the concurrency split among them (see genDurableRun). */
  engines?: number;
  /** instances' fillfactor, set before the rows go in; the migrations' own when not given. */
  fillfactor?: number;
  /** The jobs draw from a limit that is never short (NoopLimited). */
  limited?: boolean;
  /** The group commit deletes the rows of done outcomes (see deleteDoneRows). */
  deleteDone?: boolean;
  /** Job i gets concurrency key `k${i mod keys}` (limit 1 a key), as the flow phase's keyed run. */
  keys?: number;
  /** Jobs queued before the start, of which the run times the first JOBS (as the bench's deep-queue run). */
  queued?: number;
  /** SQL run after the migrations, `{{schema}}` standing for the schema: a variant to time (gd-variant). */
  variantSql?: string;
}

/**
 * `engines` > 1 splits the concurrency over several engines in this process (as
 * if several nodes ran): each has its own claim → run → commit cycle, so their
 * round trips overlap. If that beats one engine at the same total concurrency,
 * the single engine is bound by the serial cycle, not by Postgres or CPU.
 */
async function genDurableRun(
  url: string,
  admin: pg.Pool,
  pmPid: number | null,
  concurrency: number,
  poolSize: number,
  {
    engines = 1,
    fillfactor,
    limited = false,
    deleteDone = false,
    keys,
    queued = JOBS,
    variantSql,
  }: GenDurableRunOptions = {},
): Promise<Run> {
  const schema = "inv_gen_durable";
  await admin.query(`drop schema if exists ${schema} cascade`);
  await vacuumCatalogs(admin);
  await migrate({ connectionString: url, schema });
  // Set before the rows go in: it decides how full the inserts leave each page.
  if (fillfactor !== undefined) await admin.query(`alter table ${schema}.instances set (fillfactor = ${fillfactor})`);
  if (deleteDone) await deleteDoneRows(admin, schema);
  if (variantSql !== undefined) await admin.query(variantSql.replaceAll("{{schema}}", schema));
  // A node started before on these definitions, as in `npm run bench` (one schema for all its phases):
  // the measured start then skips the stranded-instance check, which reads every queued row the
  // first time a definition starts.
  const first = new GenDurable({
    connectionString: url,
    schema,
    queues: { default: 1 },
    machines: [Noop, NoopLimited],
    rateLimits: RATE_LIMITS,
  });
  await first.start();
  await first.stop();
  const producer = new GenDurable({ connectionString: url, schema });
  for (let i = 0; i < queued; i += 1000)
    await producer.insertMany(
      Array.from({ length: Math.min(1000, queued - i) }, (_, k) => ({
        machine: limited ? NoopLimited : Noop,
        args: { i: i + k },
        ...(keys === undefined ? {} : { concurrencyKey: `k${(i + k) % keys}` }),
      })),
    );
  await producer.stop();
  await admin.query(`vacuum analyze ${schema}.instances, ${schema}.transitions`);
  const pool = new pg.Pool({ connectionString: url, max: poolSize * engines, application_name: SERVER_TIME_APP });
  // Server time per function (claim_rows, complete_outcomes): how the database's share splits.
  pool.on("connect", (client) => void client.query("set track_functions = 'all'").catch(() => {}));
  const inst = instrument(pool);
  const result = await measure(
    (engines === 1
      ? `gen-durable c=${concurrency} pool=${poolSize}`
      : `gen-durable ${engines} engines × c=${concurrency / engines} (pool ${poolSize} each)`) +
      (fillfactor === undefined ? "" : ` instances fillfactor=${fillfactor}`) +
      (limited ? ", rateLimit never short" : "") +
      (keys === undefined ? "" : `, ${keys} concurrency keys`) +
      (deleteDone ? ", done rows deleted" : "") +
      (queued === JOBS ? "" : `, ${queued} queued`) +
      (variantSql === undefined ? "" : ", variant"),
    admin,
    pmPid,
    async () =>
      deleteDone
        ? (await admin.query<{ n: number }>(`select count(*)::int as n from ${schema}.instances`)).rows[0]!.n === 0
        : (await admin.query<{ n: number }>(`select count(*)::int as n from ${schema}.instances where status = 'done'`))
            .rows[0]!.n >= JOBS,
    async () => {
      const all = Array.from(
        { length: engines },
        () =>
          new GenDurable({
            pool,
            schema,
            queues: { default: concurrency / engines },
            machines: [Noop, NoopLimited],
            rateLimits: RATE_LIMITS,
          }),
      );
      await Promise.all(all.map((engine) => engine.start()));
      return async () => {
        await Promise.all(all.map((engine) => engine.stop()));
      };
    },
    inst,
  );
  await pool.end();
  await reportServerTime(admin, schema);
  return result;
}

const SERVER_TIME_APP = "gen-durable-investigate";

/**
 * Time spent inside each of the schema's functions during the run, per job, from
 * pg_stat_user_functions (the engine's connections set track_functions, which takes a superuser;
 * without one nothing is printed). A backend reports its counts when it exits at the latest: read
 * once the run's connections are gone. Elapsed time in the function, which on a busy server
 * includes waiting for a CPU.
 */
async function reportServerTime(admin: pg.Pool, schema: string): Promise<void> {
  if (warmingUp) return;
  const deadline = performance.now() + 5_000;
  for (;;) {
    const { rows } = await admin.query<{ n: number }>(
      "select count(*)::int as n from pg_stat_activity where application_name = $1",
      [SERVER_TIME_APP],
    );
    if (rows[0]!.n === 0 || performance.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  await admin.query("select pg_stat_clear_snapshot()");
  const { rows } = await admin.query<{ funcname: string; calls: number; ms: number }>(
    "select funcname, calls::int, total_time as ms from pg_stat_user_functions where schemaname = $1 order by total_time desc",
    [schema],
  );
  const shown = rows.filter((r) => r.ms >= 1);
  if (shown.length === 0) return;
  const parts = shown.map((r) => `${r.funcname} ${fmt((r.ms / JOBS) * 1000)} µs/job (${r.calls} calls)`);
  console.log(`  server time in functions: ${parts.join(", ")}`);
}

async function graphileRun(
  url: string,
  admin: pg.Pool,
  pmPid: number | null,
  concurrency: number,
  batched: boolean,
): Promise<Run> {
  const schema = "inv_graphile";
  await admin.query(`drop schema if exists ${schema} cascade`);
  await vacuumCatalogs(admin);
  await runMigrations({ connectionString: url, schema, logger: silent });
  const pool = new pg.Pool({ connectionString: url, max: Math.max(10, concurrency + 2) });
  const inst = instrument(pool);
  await admin.query(`insert into ${schema}._private_tasks (identifier) values ('noop') on conflict do nothing`);
  // Same as workerUtils.addJobs, in SQL, to keep the producer out of the instrumented pool.
  const { rows } = await admin.query<{ id: number }>(
    `select id from ${schema}._private_tasks where identifier = 'noop'`,
  );
  await admin.query(
    `insert into ${schema}._private_jobs (task_id, payload, run_at, max_attempts, priority)
     select $1, jsonb_build_object('i', g), now(), 25, 0 from generate_series(1, $2) g`,
    [rows[0]!.id, JOBS],
  );
  await admin.query(`vacuum analyze ${schema}._private_jobs`);
  const result = await measure(
    `graphile-worker${batched ? " (batched)" : ""} c=${concurrency}`,
    admin,
    pmPid,
    async () =>
      (await admin.query<{ n: number }>(`select count(*)::int as n from ${schema}._private_jobs`)).rows[0]!.n === 0,
    async () => {
      const runner = await run({
        pgPool: pool,
        schema,
        concurrency,
        noHandleSignals: true,
        logger: silent,
        taskList: {
          noop: async () => {
            calls.call();
          },
        },
        ...(batched
          ? { preset: { worker: { localQueue: { size: 500 }, completeJobBatchDelay: 0, failJobBatchDelay: 0 } } }
          : {}),
      });
      return () => runner.stop();
    },
    inst,
  );
  await pool.end();
  return result;
}

async function pgBossRun(url: string, admin: pg.Pool, pmPid: number | null, concurrency: number): Promise<Run> {
  const schema = "inv_pgboss";
  await admin.query(`drop schema if exists ${schema} cascade`);
  await vacuumCatalogs(admin);
  const producer = new PgBoss({ connectionString: url, schema });
  producer.on("error", () => {});
  await producer.start();
  await producer.createQueue("noop", { notify: true });
  for (let i = 0; i < JOBS; i += 1000)
    await producer.insert(
      "noop",
      Array.from({ length: Math.min(1000, JOBS - i) }, (_, k) => ({ data: { i: i + k } })),
    );
  await producer.stop({ graceful: true, close: true });
  await admin.query(`vacuum analyze ${schema}.job`);
  return measure(
    `pg-boss c=${concurrency}`,
    admin,
    pmPid,
    async () =>
      (await admin.query<{ n: number }>(`select count(*)::int as n from ${schema}.job where state = 'completed'`))
        .rows[0]!.n >= JOBS,
    async () => {
      const boss = new PgBoss({ connectionString: url, schema, useListenNotify: true });
      boss.on("error", () => {});
      await boss.start();
      await boss.work("noop", { ...pgBossSplit(concurrency), burstWhenBatchFull: true }, async (jobs) => {
        for (let k = 0; k < jobs.length; k++) calls.call();
      });
      return () => boss.stop({ graceful: true, close: true });
    },
  );
}

/**
 * gen-durable's claim and complete statements alone: one client, sequential,
 * at several batch sizes, as named (prepared) statements like the engine's. Wall-clock per job separates a round trip's fixed
 * cost from the per-row cost; WAL bytes per job and planning time are
 * load-independent measures of the work each statement does. A variant shows
 * what the `instances_machine` index costs (a job enters it once, when it
 * finishes: sql/by-machine.ts). (A no-op job's done writes no
 * history row: the instance row keeps it, see sql/done-transition.ts.)
 */
async function statementCosts(url: string, admin: pg.Pool): Promise<void> {
  const variants: Array<{ label: string; dropMachineIndex: boolean; sizes: number[] }> = [
    { label: "as shipped", dropMachineIndex: false, sizes: [1, 10, 32, 100, 500] },
    { label: "without index instances_machine", dropMachineIndex: true, sizes: [32, 500] },
  ];
  for (const variant of variants) {
    const schema = "inv_statements";
    await admin.query(`drop schema if exists ${schema} cascade`);
    await vacuumCatalogs(admin);
    await migrate({ connectionString: url, schema });
    if (variant.dropMachineIndex) await admin.query(`drop index ${schema}.instances_machine`);
    const producer = new GenDurable({ connectionString: url, schema });
    for (let i = 0; i < JOBS; i += 1000)
      await producer.insertMany(
        Array.from({ length: Math.min(1000, JOBS - i) }, (_, k) => ({ machine: Noop, args: { i: i + k } })),
      );
    await producer.stop();
    await admin.query(`vacuum analyze ${schema}.instances, ${schema}.transitions`);
    const q = claimQueries(schema);
    const complete = q.complete.text;
    const client = new pg.Client({ connectionString: url });
    await client.connect();
    // queue, machines, want, node, lease ms, no global limit, all k start at once (as a node with k free slots).
    const claimArgs = (k: number) => ["default", ["Noop"], k, "investigate", 30_000, null, k, k];
    const planning = async (sql: string, args: unknown[]) => {
      const { rows } = await client.query<{ "QUERY PLAN": Array<{ "Planning Time": number }> }>(
        `explain (summary, format json) ${sql}`,
        args,
      );
      return rows[0]!["QUERY PLAN"][0]!["Planning Time"];
    };
    const lsn = async () =>
      (await client.query<{ l: string }>("select pg_current_wal_insert_lsn()::text as l")).rows[0]!.l;
    const walSince = async (from: string) =>
      Number(
        (
          await client.query<{ d: string }>(
            "select pg_wal_lsn_diff(pg_current_wal_insert_lsn(), $1::pg_lsn)::text as d",
            [from],
          )
        ).rows[0]!.d,
      );
    console.log(`\ngen-durable statements alone, ${variant.label} (one client, sequential; ${JOBS} rows queued):`);
    console.log(
      "  batch │ claim ms  µs/job  WAL B/job  plan ms │ complete ms  µs/job  WAL B/job  plan ms │ 'select 1' ms",
    );
    let remaining = JOBS;
    for (const k of variant.sizes) {
      const rounds = Math.max(3, Math.min(200, Math.floor(2000 / k)));
      if (remaining < rounds * k) break;
      let claimMs = 0;
      let completeMs = 0;
      let pingMs = 0;
      let claimWal = 0;
      let completeWal = 0;
      let rowsDone = 0;
      const claimPlan = await planning(q.claim.text, claimArgs(k));
      let completePlan = 0;
      for (let r = 0; r < rounds; r++) {
        let mark = await lsn();
        let t = performance.now();
        const { rows } = await client.query<{ id: string; claim_token: string; step: string; attempt: number }>({
          name: "inv_claim",
          text: q.claim.text,
          values: claimArgs(k),
        });
        claimMs += performance.now() - t;
        claimWal += await walSince(mark);
        // The executor's Completion for a plain `done`, sorted by id as the Completer does.
        const payload = JSON.stringify(
          rows
            .map((row) => ({
              id: row.id,
              token: row.claim_token,
              status: "done",
              step: null,
              set_state: false,
              state: null,
              run_at: null,
              delay_ms: null,
              priority: null,
              attempt_op: "keep",
              result: null,
              error: null,
              await_spec: null,
              from_step: row.step,
              to_step: null,
              outcome: "done",
              attempt: row.attempt,
              duration_ms: 0,
              hist_error: null,
            }))
            .sort((a, b) => Number(BigInt(a.id) - BigInt(b.id))),
        );
        if (r === 0) completePlan = await planning(complete, [payload]);
        mark = await lsn();
        t = performance.now();
        await client.query({ name: "inv_complete", text: complete, values: [payload] });
        completeMs += performance.now() - t;
        completeWal += await walSince(mark);
        t = performance.now();
        await client.query("select 1");
        pingMs += performance.now() - t;
        rowsDone += rows.length;
        remaining -= rows.length;
      }
      const per = (x: number) => fmt((x / rowsDone) * 1000).padStart(6);
      const perB = (x: number) => fmt(x / rowsDone).padStart(9);
      console.log(
        `  ${String(k).padStart(5)} │ ${fmt(claimMs / rounds).padStart(8)}  ${per(claimMs)}  ${perB(claimWal)}  ${fmt(claimPlan).padStart(7)} │ ` +
          `${fmt(completeMs / rounds).padStart(11)}  ${per(completeMs)}  ${perB(completeWal)}  ${fmt(completePlan).padStart(7)} │ ${fmt(pingMs / rounds).padStart(8)}`,
      );
    }
    await client.end();
  }
}

async function main(): Promise<void> {
  const db = await startDevDatabase();
  const admin = new pg.Pool({ connectionString: db.url, max: 2, application_name: "bench-admin" });
  try {
    const pmPid = await postmasterPid(admin);
    const which = (process.env.BENCH_INVESTIGATE ?? "gd,gd-split,gd-pool,gd-big,gw,gwb,boss,sql").split(",");
    console.log(
      `investigation — ${JOBS} no-op jobs per run; load average ${readFileSync("/proc/loadavg", "utf8").split(" ").slice(0, 3).join(" ")}`,
    );
    if (which.some((w) => w.startsWith("gd"))) await warmedUp(() => genDurableRun(db.url, admin, pmPid, 32, 10));
    if (which.includes("gd")) for (const c of [10, 32]) await genDurableRun(db.url, admin, pmPid, c, 10);
    if (which.includes("gd-pool")) await genDurableRun(db.url, admin, pmPid, 32, 34);
    if (which.includes("gd-split")) {
      await genDurableRun(db.url, admin, pmPid, 10, 10, { engines: 2 });
      await genDurableRun(db.url, admin, pmPid, 32, 10, { engines: 2 });
    }
    if (which.includes("gd-big")) for (const c of [100, 500]) await genDurableRun(db.url, admin, pmPid, c, 10);
    if (which.includes("gd-fillfactor")) {
      // instances at version 9's fillfactor (80) against the migrations' current one, in alternating pairs.
      for (let pair = 0; pair < 3; pair++) {
        await genDurableRun(db.url, admin, pmPid, 32, 10, { fillfactor: 80 });
        await genDurableRun(db.url, admin, pmPid, 32, 10);
      }
    }
    /**
     * `count` alternating pairs at c=32 of the run as migrated (`base` options) and of `options`;
     * prints each pair's ratio (how much faster the second ran: base time ÷ its time) and the median.
     */
    const pairs = async (
      label: string,
      count: number,
      options: GenDurableRunOptions,
      base: GenDurableRunOptions = {},
    ) => {
      const ratios: number[] = [];
      for (let pair = 0; pair < count; pair++) {
        const before = await genDurableRun(db.url, admin, pmPid, 32, 10, base);
        const after = await genDurableRun(db.url, admin, pmPid, 32, 10, options);
        ratios.push(before.ms / after.ms);
      }
      console.log(
        `\n${label}, by pair: ${ratios.map((r) => r.toFixed(3)).join(", ")}; median ${median(ratios).toFixed(3)}`,
      );
    };
    if (which.includes("gd-rate-limit")) await pairs("rateLimit never short ÷ without", 6, { limited: true });
    // As the flow phase's keyed run: ten jobs a key, limit 1 a key.
    if (which.includes("gd-keyed")) await pairs("keyed ÷ unkeyed", 6, { keys: Math.max(1, Math.round(JOBS / 10)) });
    // As the bench's deep-queue run: the first JOBS of DEEP_QUEUE queued, against JOBS queued.
    if (which.includes("gd-deep")) await pairs(`${DEEP_QUEUE} queued ÷ ${JOBS} queued`, 3, { queued: DEEP_QUEUE });
    if (which.includes("gd-variant")) {
      // The schema as migrated against the same with BENCH_VARIANT_SQL run after the migrations
      // (`{{schema}}` for the schema), over BENCH_VARIANT_KEYS concurrency keys when set.
      const variantSql = readFileSync(process.env.BENCH_VARIANT_SQL ?? "", "utf8");
      const keys = process.env.BENCH_VARIANT_KEYS === undefined ? undefined : Number(process.env.BENCH_VARIANT_KEYS);
      await pairs("variant ÷ as migrated", 4, { keys, variantSql }, { keys });
    }
    if (which.includes("gd-delete-done")) {
      for (let pair = 0; pair < 3; pair++) {
        await genDurableRun(db.url, admin, pmPid, 32, 10);
        await genDurableRun(db.url, admin, pmPid, 32, 10, { deleteDone: true });
      }
    }
    if (which.includes("gw") || which.includes("gwb"))
      await warmedUp(() => graphileRun(db.url, admin, pmPid, 32, true));
    if (which.includes("gw")) for (const c of [10, 32]) await graphileRun(db.url, admin, pmPid, c, false);
    if (which.includes("gwb")) for (const c of [10, 32]) await graphileRun(db.url, admin, pmPid, c, true);
    if (which.includes("boss")) await warmedUp(() => pgBossRun(db.url, admin, pmPid, 32));
    if (which.includes("boss")) for (const c of [10, 32]) await pgBossRun(db.url, admin, pmPid, c);
    if (which.includes("sql")) await statementCosts(db.url, admin);
  } finally {
    for (const schema of ["inv_gen_durable", "inv_graphile", "inv_pgboss", "inv_statements"]) {
      await admin.query(`drop schema if exists ${schema} cascade`).catch(() => {});
    }
    await admin.end();
    process.on("uncaughtException", (error: Error & { code?: string }) => {
      if (error.code !== "57P01") throw error;
    });
    await db.stop();
  }
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    console.error(error);
    process.exit(1);
  },
);
