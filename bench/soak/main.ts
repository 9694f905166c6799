/**
 * `npm run soak`: a long run of a mixed workload with faults, checking
 * invariants as it goes, then a report. Not part of CI.
 *
 * Workload (bench/soak/machines.ts), on WORKERS worker processes (default 2,
 * each `queues: { default: 20 }`, `leaseDuration: "5s"`, retention 2 min):
 *   A  SoakOrder at SOAK_A_RATE/s (45): awaits "paid" (5 s timeout), then a
 *      5-child fan-out and a join. 80% of orders are sent "paid" within 0.2–4 s,
 *      a quarter of those twice with the same dedupKey (a webhook retried).
 *   B  SoakCharge at SOAK_B_RATE/s (90): keyed over 50 keys, one shared rate
 *      limit of 100/s with burst 20, 20–80 ms of work.
 * Faults at random moments, one seeded schedule of kinds: SIGKILLs of a worker
 * (default 10 per 15 minutes; the worker is forked again at once, as a
 * supervisor would), rounds of pg_terminate_backend on the workers' connections
 * (3 per 15 minutes) and, on the embedded Postgres only, restarts of the server
 * on its port and data directory: after a fast shutdown (3 per 30 minutes) and
 * after an immediate one, a crash that the next start recovers from the WAL
 * (2 per 30 minutes). The orchestrator's own statements (inserts with an
 * idempotencyKey, signals with a dedupKey, the checks) are retried until the
 * database is back; failed tries are counted in the report.
 *
 * Checked continuously: no two runs of one key overlap; no order accepted two
 * "paid" signals or consumed two; nothing failed; after each restart, every
 * instance acknowledged before it is still there (or finished). At the end,
 * after a drain: every order joined its 5 children and every charge ran (no
 * instance lost).
 *
 * Report: completions per machine, B's delivered rate against its limit and
 * its latency, postponements per run, faults, re-executed steps, recovery time
 * after faults (p50/p99, also per kind of fault; and each restart's), dead
 * tuples over time, RSS per process over time.
 *
 * env: DATABASE_URL (else an embedded Postgres with durable settings, see dev/postgres.ts; restarts need it),
 * SOAK_MINUTES (30), SOAK_A_RATE (45), SOAK_B_RATE (90), SOAK_WORKERS (2),
 * SOAK_POOL (22: each worker's pool; see docs/reliability.md for the default of 10),
 * SOAK_KILLS, SOAK_TERMINATIONS, SOAK_RESTARTS (fast), SOAK_CRASHES (immediate), SOAK_DRAIN_MINUTES (3), SOAK_SEED,
 * SOAK_OUT (also write the report's figures as JSON there), SOAK_KEEP_SCHEMA=1,
 * SOAK_TABLE_SETTINGS=server (reset the tables' storage and autovacuum settings
 * of migration 0009 to the server's defaults, to compare).
 */
import { fork, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { startDevDatabase, type EmbeddedServer, type StopMode } from "../../dev/postgres.js";
import { GenDurable, GenDurableError, migrate, type InsertManyItem } from "../../src/index.js";
import { fmt, percentile, round, sleep } from "../util.js";
import { CHILDREN, KEYS, ledgerSql, rateLimits, SoakCharge, SoakOrder } from "./machines.js";

const num = (name: string, fallback: number) => {
  const raw = process.env[name];
  if (raw === undefined || raw === "") return fallback;
  const value = Number(raw);
  if (!Number.isFinite(value) || value < 0) throw new Error(`${name} must be a non-negative number, got "${raw}"`);
  return value;
};
const MINUTES = num("SOAK_MINUTES", 30);
const A_RATE = num("SOAK_A_RATE", 45);
const B_RATE = num("SOAK_B_RATE", 90);
const WORKERS = Math.max(1, Math.round(num("SOAK_WORKERS", 2)));
const KILLS = Math.round(num("SOAK_KILLS", Math.max(1, Math.round((10 * MINUTES) / 15))));
const TERMINATIONS = Math.round(num("SOAK_TERMINATIONS", Math.max(1, Math.round((3 * MINUTES) / 15))));
const RESTARTS = Math.round(num("SOAK_RESTARTS", Math.max(1, Math.round((3 * MINUTES) / 30))));
const CRASHES = Math.round(num("SOAK_CRASHES", Math.max(1, Math.round((2 * MINUTES) / 30))));
const DRAIN_MINUTES = num("SOAK_DRAIN_MINUTES", 3);
const POOL = Math.max(1, Math.round(num("SOAK_POOL", 22)));
const SEED = Math.round(num("SOAK_SEED", Date.now() % 1_000_000));
const LIMIT = rateLimits.shared.limit;
const HOT_TABLES = ["instances", "transitions", "signals", "concurrency_keys", "rate_limit_buckets", "nodes"];
const AUTOVACUUM = [
  "autovacuum_vacuum_scale_factor",
  "autovacuum_vacuum_threshold",
  "autovacuum_vacuum_cost_limit",
  "autovacuum_vacuum_cost_delay",
];
/** What migration 0009 sets per table (SOAK_TABLE_SETTINGS=server resets it). */
const STORAGE_OPTIONS: Record<string, string[]> = {
  instances: ["fillfactor", ...AUTOVACUUM, "autovacuum_vacuum_insert_scale_factor", "autovacuum_analyze_scale_factor"],
  transitions: [...AUTOVACUUM, "autovacuum_vacuum_insert_scale_factor"],
  signals: ["fillfactor", ...AUTOVACUUM, "autovacuum_vacuum_insert_scale_factor"],
  concurrency_keys: ["fillfactor", ...AUTOVACUUM],
  rate_limit_buckets: ["fillfactor", ...AUTOVACUUM],
  nodes: ["fillfactor", "autovacuum_vacuum_scale_factor", "autovacuum_vacuum_threshold"],
};

/** mulberry32: the fault schedule and the signals replay from SOAK_SEED. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const random = seeded(SEED);

/** The kinds of fault, in the order the report lists them; one schedule holds them all. */
const FAULT_KINDS = ["SIGKILL", "pg_terminate_backend", "restart", "crash"] as const;
type FaultKind = (typeof FAULT_KINDS)[number];
const FAULT_NAMES: Record<FaultKind, string> = {
  SIGKILL: "SIGKILLs of a worker",
  pg_terminate_backend: "rounds of pg_terminate_backend",
  restart: "restarts of Postgres after a fast shutdown",
  crash: "restarts of Postgres after an immediate shutdown (a crash)",
};
interface Fault {
  /** Seconds since the load started, when the fault began. */
  at: number;
  kind: FaultKind;
  detail: string;
  /** Restarts: from the stop until the server accepted connections again. */
  downSeconds?: number;
  /** Restarts: instances acknowledged before the stop and gone after the start (must be 0). */
  lostAcknowledged?: { orders: number; charges: number };
}
const log = (line: string) => console.log(`[soak ${new Date().toISOString().slice(11, 19)}] ${line}`);

/** Failed tries of the orchestrator's own statements, by what they were for (each retried). */
const failedTries: Record<string, number> = {};

/**
 * Runs one of the orchestrator's own statements until it goes through. While the database
 * restarts, every statement fails (refused, terminated, "starting up", a connect timeout): the
 * producer and the checks wait that out, as a client that must not lose work does, instead of
 * crashing or skipping. The engine's refusals (GenDurableError: a signal to a finished order) are
 * answers, not outages, and are thrown at once; so is anything after `patienceMs`.
 */
async function persist<T>(what: string, run: () => Promise<T>, patienceMs = 180_000): Promise<T> {
  const deadline = performance.now() + patienceMs;
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    try {
      return await run();
    } catch (error) {
      if (error instanceof GenDurableError || performance.now() > deadline) throw error;
      if ((failedTries[what] = (failedTries[what] ?? 0) + 1) === 1 || failedTries[what] % 100 === 0)
        log(`${what} failed (${failedTries[what]} tries so far), retrying: ${String(error).slice(0, 160)}`);
      await sleep(delay);
    }
  }
}

// ------------------------------------------------------------------ workers

interface Slot {
  index: number;
  generation: number;
  name: string;
  child: ChildProcess | undefined;
  ready: boolean;
  output: string;
  rss: number;
}

interface Second {
  /** Seconds since the load started. */
  t: number;
  done: Record<string, number>;
  started: number;
  postponed: number;
  leaseLost: number;
  errors: number;
}

const workerScript = fileURLToPath(new URL("./worker.ts", import.meta.url));

class Workers {
  readonly slots: Slot[] = [];
  readonly exits: Array<{ name: string; code: number | null; signal: string | null; killed: boolean; at: number }> = [];
  readonly errors: string[] = [];
  readonly warnings = new Set<string>();
  private stopping = false;
  private readonly killed = new Set<number>();
  /** Counters received since the last `take()`. */
  private pending: Omit<Second, "t"> = Workers.empty();

  constructor(
    private readonly url: string,
    private readonly schema: string,
    private readonly prefix: string,
  ) {}

  static empty(): Omit<Second, "t"> {
    return { done: {}, started: 0, postponed: 0, leaseLost: 0, errors: 0 };
  }

  names(): string[] {
    return this.slots.map((s) => s.name);
  }

  async start(count: number): Promise<void> {
    await Promise.all(Array.from({ length: count }, (_, i) => this.spawn(i)));
  }

  private spawn(index: number): Promise<void> {
    const previous = this.slots[index];
    const generation = previous ? previous.generation + 1 : 0;
    const name = `${this.prefix}-w${index}`;
    const slot: Slot = { index, generation, name, child: undefined, ready: false, output: "", rss: 0 };
    this.slots[index] = slot;
    const child = fork(workerScript, [], {
      execArgv: ["--import", "tsx"],
      env: {
        ...process.env,
        NODE_OPTIONS: "",
        DATABASE_URL: this.url,
        SOAK_SCHEMA: this.schema,
        SOAK_NAME: name,
        SOAK_POOL: String(POOL),
      },
      stdio: ["ignore", "pipe", "pipe", "ipc"],
      serialization: "advanced",
    });
    slot.child = child;
    const collect = (chunk: Buffer) => {
      slot.output = (slot.output + chunk.toString()).slice(-8000);
    };
    child.stdout?.on("data", collect);
    child.stderr?.on("data", collect);
    child.on("error", () => {});
    return new Promise((resolve) => {
      child.on("message", (raw) => {
        const m = raw as Record<string, unknown>;
        if (m.type === "ready") {
          slot.ready = true;
          resolve();
        } else if (m.type === "stats") {
          slot.rss = m.rss as number;
          const p = this.pending;
          for (const [machine, n] of Object.entries(m.done as Record<string, number>))
            p.done[machine] = (p.done[machine] ?? 0) + n;
          p.started += m.started as number;
          p.postponed += m.postponed as number;
          p.leaseLost += m.leaseLost as number;
          p.errors += m.errors as number;
          if (m.lastError) this.errors.push(`${name}: ${String(m.lastError)}`);
          for (const w of m.warnings as string[]) this.warnings.add(w);
        }
      });
      child.once("exit", (code, signal) => {
        const killed = this.killed.delete(child.pid!);
        this.exits.push({ name: `${name}#${generation}`, code, signal, killed, at: performance.now() });
        if (!killed && !this.stopping)
          log(
            `worker ${name}#${generation} exited on its own (code ${code}, signal ${signal}); output:\n${slot.output.slice(-2000)}`,
          );
        resolve();
        // A supervisor would start it again at once.
        if (!this.stopping && this.slots[index] === slot) void this.spawn(index);
      });
    });
  }

  /** SIGKILLs a random worker that is up; returns its name. */
  kill(): string | undefined {
    const live = this.slots.filter(
      (s) => s.ready && s.child && s.child.exitCode === null && s.child.signalCode === null,
    );
    if (live.length === 0) return undefined;
    const slot = live[Math.floor(random() * live.length)]!;
    this.killed.add(slot.child!.pid!);
    slot.child!.kill("SIGKILL");
    return `${slot.name}#${slot.generation}`;
  }

  take(): Omit<Second, "t"> {
    const taken = this.pending;
    this.pending = Workers.empty();
    return taken;
  }

  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.slots.map(
        (s) =>
          new Promise<void>((resolve) => {
            const child = s.child;
            if (!child || child.exitCode !== null || child.signalCode !== null) return resolve();
            child.once("exit", () => resolve());
            child.kill("SIGTERM");
            setTimeout(() => child.kill("SIGKILL"), 5000).unref();
          }),
      ),
    );
  }
}

// ------------------------------------------------------------------ main

async function main(): Promise<void> {
  // Durable settings on the embedded server: a restart must keep every commit it acknowledged.
  const db = await startDevDatabase({ log: (line) => console.error(`[postgres] ${line}`), durable: true });
  const id = `soak-${randomBytes(3).toString("hex")}`;
  const schema = id.replace("-", "_");
  const appUrl = (app: string) => {
    const u = new URL(db.url);
    u.searchParams.set("application_name", app);
    return u.toString();
  };
  const admin = new pg.Pool({ connectionString: db.url, max: 3, application_name: `${id}-admin` });
  // A restart breaks idle and busy connections alike; each failure reaches its caller's query.
  admin.on("error", () => {});
  admin.on("connect", (connection) => connection.on("error", () => {}));
  const { rows: env } = await admin.query<{
    version: string;
    autovacuum: string;
    fsync: string;
    synchronous_commit: string;
  }>(
    "select current_setting('server_version') as version, current_setting('autovacuum') as autovacuum, current_setting('fsync') as fsync, current_setting('synchronous_commit') as synchronous_commit",
  );
  const environment = {
    postgres: env[0]!.version,
    autovacuum: env[0]!.autovacuum,
    fsync: env[0]!.fsync,
    synchronousCommit: env[0]!.synchronous_commit,
    database: db.embedded ? "embedded (dev/postgres.ts)" : "DATABASE_URL",
    node: process.version,
    cpus: cpus().length,
    cpuModel: cpus()[0]?.model ?? "unknown",
    loadAverageAtStart: loadavg().map((x) => round(x, 2)),
    tableSettings: "",
  };
  log(
    `schema ${schema}; ${MINUTES} min of load + up to ${DRAIN_MINUTES} min of drain; A ${A_RATE}/s, B ${B_RATE}/s (limit ${LIMIT}/s, burst ${rateLimits.shared.burst}); ` +
      `${WORKERS} workers (pool ${POOL}); seed ${SEED}; Postgres ${environment.postgres} (autovacuum ${environment.autovacuum}, fsync ${environment.fsync}); table settings: ${process.env.SOAK_TABLE_SETTINGS === "server" ? "server defaults" : "migration 0009"}`,
  );
  await migrate({ connectionString: db.url, schema });
  environment.tableSettings = process.env.SOAK_TABLE_SETTINGS === "server" ? "server defaults" : "migration 0009";
  await admin.query(ledgerSql(schema));
  const s = `"${schema}"`;
  if (process.env.SOAK_TABLE_SETTINGS === "server") {
    for (const [table, options] of Object.entries(STORAGE_OPTIONS))
      await admin.query(`alter table ${s}.${table} reset (${options.join(", ")})`);
  }

  const client = new GenDurable({ connectionString: appUrl(`${id}-client`), schema, rateLimits, poolSize: 6 });
  const clientErrors: string[] = [];
  client.on("engine:error", ({ loop, error }) =>
    clientErrors.push(`${loop}: ${error instanceof Error ? error.message : String(error)}`),
  );
  await client.start();
  // The plain URL: each worker names its own connections (application_name), which pg_terminate_backend picks by.
  const workers = new Workers(db.url, schema, id);
  await workers.start(WORKERS);
  log(`${WORKERS} workers ready`);

  const t0 = performance.now();
  const t0Wall = new Date();
  const now = () => (performance.now() - t0) / 1000;
  const loadSeconds = MINUTES * 60;
  const violations: string[] = [];
  const violation = (what: string) => {
    if (violations.length < 50) violations.push(`${round(now(), 1)} s: ${what}`);
    log(`VIOLATION: ${what}`);
  };

  // ---- the fault schedule: every kind's count at random moments of the load (SOAK_SEED)
  const server: EmbeddedServer | undefined = db.server;
  const planned: Record<FaultKind, number> = {
    SIGKILL: KILLS,
    pg_terminate_backend: TERMINATIONS,
    // Only a server of the soak's own may be restarted.
    restart: server ? RESTARTS : 0,
    crash: server ? CRASHES : 0,
  };
  const restartsSkipped =
    server || RESTARTS + CRASHES === 0
      ? undefined
      : `${RESTARTS + CRASHES} restarts skipped: DATABASE_URL is set, and the soak restarts only an embedded Postgres of its own`;
  const window = { from: Math.min(60, loadSeconds * 0.2), to: loadSeconds - Math.min(30, loadSeconds * 0.1) };
  const schedule = FAULT_KINDS.flatMap((kind) => Array.from({ length: planned[kind] }, () => kind))
    .map((kind) => ({ kind, at: window.from + random() * (window.to - window.from) }))
    .sort((a, b) => a.at - b.at);
  log(
    `faults planned: ${FAULT_KINDS.map((kind) => `${planned[kind]} ${FAULT_NAMES[kind]}`).join(", ")}` +
      (restartsSkipped ? ` (${restartsSkipped})` : ""),
  );

  // ---- inserts and signals
  const orders = new Map<string, { n: number; signalled: number; accepted: number }>();
  const charges: string[] = [];
  /** The producer's count: statements that failed (each retried), and what the retries found. */
  const inserts = { failedTries: 0, foundOnRetry: 0, givenUp: 0, lastError: "" };
  const signalsSent = { refused: 0, givenUp: 0 };
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, run: () => Promise<void>) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      void run();
    }, ms);
    timers.add(timer);
  };
  const sendPaid = async (orderId: string) => {
    const order = orders.get(orderId)!;
    order.signalled++;
    try {
      // Retried with its dedupKey: a retry whose first try committed is reported a duplicate.
      const result = await persist(
        "signal",
        () => client.signal({ id: orderId }, "paid", { n: order.n }, { dedupKey: `paid:${order.n}` }),
        60_000,
      );
      if (!result.duplicate) order.accepted++;
      if (order.accepted > 1) violation(`order ${orderId} accepted ${order.accepted} "paid" signals with one dedupKey`);
    } catch (error) {
      // A terminated or finished order refuses late signals; that is not a violation.
      if (error instanceof GenDurableError) signalsSent.refused++;
      else signalsSent.givenUp++;
    }
  };
  /**
   * One batch, retried until it goes through. Each row carries an idempotencyKey, so a retry
   * after a reply lost with the connection (the rows committed) returns those rows instead of
   * inserting them twice.
   */
  const insertBatch = async (items: InsertManyItem[]): Promise<string[] | undefined> => {
    let tries = 0;
    try {
      const results = await persist("insert", () => {
        tries++;
        return client.insertMany(items);
      });
      inserts.failedTries += tries - 1;
      if (tries > 1) inserts.foundOnRetry += results.filter((r) => !r.inserted).length;
      return results.map((r) => r.id);
    } catch (error) {
      inserts.failedTries += tries;
      inserts.givenUp += items.length;
      inserts.lastError = String(error);
      return undefined;
    }
  };
  let inserting = true;
  let nA = 0;
  let nB = 0;
  const insertLoop = (async () => {
    const tickMs = 100;
    let debtA = 0;
    let debtB = 0;
    // After an outage the ticks missed are made up at once: the producer's backlog, as a queue in front of it would hold.
    for (let tick = 0; inserting; tick++) {
      debtA += (A_RATE * tickMs) / 1000;
      debtB += (B_RATE * tickMs) / 1000;
      const a: number[] = [];
      const b: number[] = [];
      for (; debtA >= 1; debtA--) a.push(nA++);
      for (; debtB >= 1; debtB--) b.push(nB++);
      if (a.length > 0) {
        const ids = await insertBatch(
          a.map((n) => ({ machine: SoakOrder, state: { n, paid: [] }, idempotencyKey: `A:${n}` })),
        );
        ids?.forEach((id, i) => {
          orders.set(id, { n: a[i]!, signalled: 0, accepted: 0 });
          if (random() < 0.8) {
            later(200 + random() * 3800, () => sendPaid(id));
            if (random() < 0.25) later(400 + random() * 4600, () => sendPaid(id));
          }
        });
      }
      if (b.length > 0) {
        const ids = await insertBatch(
          b.map((n) => ({
            machine: SoakCharge,
            args: { n, key: `k${n % KEYS}` },
            concurrencyKey: `k${n % KEYS}`,
            idempotencyKey: `B:${n}`,
          })),
        );
        if (ids) charges.push(...ids);
      }
      await sleep(Math.max(0, t0 + (tick + 1) * tickMs - performance.now()));
    }
  })();

  // ---- per-second counters, samples, invariants
  const seconds: Second[] = [];
  const samples: Array<{
    t: number;
    dead: Record<string, number>;
    live: Record<string, number>;
    rss: Record<string, number>;
    /** The host's 1-minute load average: the machine may be shared. */
    load: number;
  }> = [];
  const lastVacuum: Record<string, string | null> = {};
  let checkedUpTo = new Date(0);
  const checkKeys = async () => {
    // Completed runs of one key, in start order, each starting after every earlier one ended.
    const since = new Date(checkedUpTo.getTime() - 120_000);
    const { rows } = await admin.query<{ ckey: string; instance_id: string; started_at: Date; prev_end: Date }>(
      `select ckey, instance_id::text, started_at, prev_end from (
         select ckey, instance_id, started_at, max(ended_at) over (partition by ckey order by started_at rows between unbounded preceding and 1 preceding) as prev_end
         from ${s}.soak_b_runs where ended_at is not null and started_at >= $1) r
       where prev_end > started_at limit 5`,
      [since],
    );
    for (const r of rows)
      violation(
        `key ${r.ckey}: run of ${r.instance_id} started at ${r.started_at.toISOString()} before an earlier run ended (${r.prev_end.toISOString()})`,
      );
    const { rows: upTo } = await admin.query<{ t: Date | null }>(
      `select max(started_at) as t from ${s}.soak_b_runs where ended_at is not null`,
    );
    if (upTo[0]!.t) checkedUpTo = upTo[0]!.t;
  };
  const checkSignals = async () => {
    const { rows } = await admin.query<{ order_id: string; n: number }>(
      `select order_id::text, cardinality(paid_signals) as n from ${s}.soak_orders where cardinality(paid_signals) > 1 limit 5`,
    );
    for (const r of rows) violation(`order ${r.order_id} consumed ${r.n} "paid" signals`);
    const { rows: children } = await admin.query<{ order_id: string; children_done: number }>(
      `select order_id::text, children_done from ${s}.soak_orders where children_done <> $1 or children <> $1 limit 5`,
      [CHILDREN],
    );
    for (const r of children)
      violation(`order ${r.order_id} joined ${r.children_done} finished children of ${CHILDREN}`);
    const { rows: failed } = await admin.query<{ id: string; machine: string; error: unknown }>(
      `select id::text, machine, error from ${s}.instances where status = 'failed' limit 5`,
    );
    for (const r of failed) violation(`instance ${r.id} (${r.machine}) failed: ${JSON.stringify(r.error)}`);
  };
  const sampleTables = async () => {
    // Memory first: it does not wait for the database.
    const t = round(now());
    const rss: Record<string, number> = { orchestrator: process.memoryUsage().rss };
    for (const slot of workers.slots) rss[slot.name] = slot.rss;
    const { rows } = await persist("check", () =>
      admin.query<{
        relname: string;
        live: string;
        dead: string;
        last_vacuum: Date | null;
        last_autovacuum: Date | null;
      }>(
        `select relname, n_live_tup::text as live, n_dead_tup::text as dead, last_vacuum, last_autovacuum
         from pg_stat_user_tables where schemaname = $1 and relname = any($2)`,
        [schema, HOT_TABLES],
      ),
    );
    const dead: Record<string, number> = {};
    const live: Record<string, number> = {};
    for (const r of rows) {
      dead[r.relname] = Number(r.dead);
      live[r.relname] = Number(r.live);
      const last = [r.last_vacuum, r.last_autovacuum]
        .filter((d): d is Date => d !== null)
        .sort((x, y) => y.getTime() - x.getTime())[0];
      lastVacuum[r.relname] = last ? last.toISOString() : null;
    }
    samples.push({ t, dead, live, rss, load: round(loadavg()[0]!, 1) });
  };

  const progress = (t: number) => {
    const last = seconds.slice(-60);
    const sum = (machine: string) => last.reduce((x, s) => x + (s.done[machine] ?? 0), 0);
    const sample = samples.at(-1);
    log(
      `${round(t / 60, 1)} min: last minute A ${fmt(sum("SoakOrder") / 60)}/s, items ${fmt(sum("SoakItem") / 60)}/s, B ${fmt(sum("SoakCharge") / 60)}/s, ` +
        `postponements ${fmt(last.reduce((x, s) => x + s.postponed, 0) / 60)}/s; dead tuples in instances ${fmt(sample?.dead.instances ?? NaN)}; ` +
        `B inserted ${fmt(nB)}, A inserted ${fmt(nA)}`,
    );
  };

  // Counters by the second, apart from the checks: a check waiting for the database must not
  // fold the seconds it waited into one (the recovery figures are read from these).
  let monitoring = true;
  const ticker = (async () => {
    for (let next = 1; monitoring; next++) {
      await sleep(Math.max(0, t0 + next * 1000 - performance.now()));
      seconds.push({ t: next, ...workers.take() });
      if (next % 60 === 0) progress(next);
    }
  })();
  const checker = (async () => {
    while (monitoring) {
      // The next multiple of 5 s: checks missed while the database was away are not made up.
      const next = Math.floor(now() / 5) * 5 + 5;
      await sleep(Math.max(0, t0 + next * 1000 - performance.now()));
      if (!monitoring) break;
      try {
        if (next % 10 === 0) await persist("check", checkKeys);
        if (next % 10 === 5) await persist("check", checkSignals);
        if (next % 15 === 0) await sampleTables();
      } catch (error) {
        log(`check failed: ${String(error)}`);
      }
    }
  })();

  // ---- faults
  const faults: Fault[] = [];
  /**
   * Acknowledged instances that are gone: neither in `instances` nor finished in the ledger (an
   * order's join, a charge's ended run, which outlive the rows the GC prunes).
   */
  const missingAcknowledged = async (orderIds: string[], chargeIds: string[]) => {
    const { rows } = await persist("check", () =>
      admin.query<{ orders: number; charges: number }>(
        `select (select count(*) from unnest($1::bigint[]) as x(id)
                 where not exists (select 1 from ${s}.instances i where i.id = x.id)
                   and not exists (select 1 from ${s}.soak_orders o where o.order_id = x.id))::int as orders,
                (select count(*) from unnest($2::bigint[]) as x(id)
                 where not exists (select 1 from ${s}.instances i where i.id = x.id)
                   and not exists (select 1 from ${s}.soak_b_runs r where r.instance_id = x.id and r.ended_at is not null))::int as charges`,
        [orderIds, chargeIds],
      ),
    );
    return rows[0]!;
  };
  const restartServer = async (mode: StopMode): Promise<Omit<Fault, "at" | "kind">> => {
    const acknowledged = { orders: [...orders.keys()], charges: [...charges] };
    const stopping = performance.now();
    await server!.stop(mode);
    const stopped = performance.now();
    for (let tries = 1; ; tries++) {
      try {
        await server!.start();
        break;
      } catch (error) {
        if (tries === 3) throw error;
        log(`restarting Postgres failed (${String(error).slice(0, 300)}); trying again`);
      }
    }
    const up = performance.now();
    const lost = await missingAcknowledged(acknowledged.orders, acknowledged.charges);
    if (lost.orders + lost.charges > 0)
      violation(
        `after the ${mode} restart, ${lost.orders} orders and ${lost.charges} charges acknowledged before it are gone`,
      );
    return {
      detail: `${mode} shutdown in ${round((stopped - stopping) / 1000, 1)} s, accepting connections again ${round((up - stopping) / 1000, 1)} s after it began`,
      downSeconds: round((up - stopping) / 1000, 1),
      lostAcknowledged: lost,
    };
  };
  const inject: Record<FaultKind, () => Promise<Omit<Fault, "at" | "kind"> | undefined>> = {
    SIGKILL: async () => {
      const name = workers.kill();
      return name ? { detail: name } : undefined;
    },
    pg_terminate_backend: async () => {
      const { rows } = await persist("fault", () =>
        admin.query<{ n: number }>(
          `select count(pg_terminate_backend(pid))::int as n from pg_stat_activity where application_name = any($1) and pid <> pg_backend_pid()`,
          [workers.names()],
        ),
      );
      return { detail: `${rows[0]!.n} connections` };
    },
    restart: () => restartServer("fast"),
    crash: () => restartServer("immediate"),
  };
  const faultLoop = (async () => {
    for (const f of schedule) {
      await sleep(Math.max(0, t0 + f.at * 1000 - performance.now()));
      if (!inserting) break;
      const at = now();
      const done = await inject[f.kind]();
      if (done) faults.push({ at, kind: f.kind, ...done });
      log(`fault: ${f.kind} ${done?.detail ?? "(nothing to kill)"}`);
    }
  })();

  await sleep(loadSeconds * 1000);
  inserting = false;
  await insertLoop;
  await faultLoop;
  const loadEnded = now();
  log(`load ended after ${round(loadEnded)} s: ${fmt(nA)} orders, ${fmt(nB)} charges inserted; draining`);

  // ---- drain: until every order joined and every charge ran, or DRAIN_MINUTES
  const drainDeadline = performance.now() + DRAIN_MINUTES * 60_000;
  let remaining = { orders: nA, charges: nB };
  for (;;) {
    await sleep(2000);
    const { rows } = await persist("check", () =>
      admin.query<{ orders: number; charges: number }>(
        `select (select count(*) from ${s}.soak_orders)::int as orders, (select count(distinct instance_id) from ${s}.soak_b_runs where ended_at is not null)::int as charges`,
      ),
    );
    remaining = { orders: orders.size - rows[0]!.orders, charges: charges.length - rows[0]!.charges };
    if ((remaining.orders <= 0 && remaining.charges <= 0) || performance.now() > drainDeadline) break;
  }
  const drained = now();
  for (const timer of timers) clearTimeout(timer);
  await persist("check", checkKeys);
  await persist("check", checkSignals);
  await sampleTables();
  monitoring = false;
  await ticker;
  await checker;

  // ---- after the drain, every order joined and every charge has a finished run. Those that did
  // not are lost when their instance is gone or finished without its ledger row, and unfinished
  // when it is still live (a backlog the drain did not clear: late, not lost).
  const TERMINAL = "('done', 'failed', 'cancelled')";
  type Missing = { lost: number; unfinished: number; sample: string[] | null };
  const summarizeMissing = (missing: string) => `
    select count(*) filter (where i.id is null or i.status in ${TERMINAL})::int as lost,
           count(*) filter (where i.status not in ${TERMINAL})::int as unfinished,
           (array_agg(x.id::text || ' ' || coalesce(i.status, 'gone')))[1:10] as sample
    from unnest($1::bigint[]) as x(id) left join ${s}.instances i on i.id = x.id where ${missing}`;
  const { rows: missingOrders } = await persist("check", () =>
    admin.query<Missing>(summarizeMissing(`not exists (select 1 from ${s}.soak_orders o where o.order_id = x.id)`), [
      [...orders.keys()],
    ]),
  );
  const { rows: missingCharges } = await persist("check", () =>
    admin.query<Missing>(
      summarizeMissing(
        `not exists (select 1 from ${s}.soak_b_runs r where r.instance_id = x.id and r.ended_at is not null)`,
      ),
      [charges],
    ),
  );
  const missing = { orders: missingOrders[0]!, charges: missingCharges[0]! };
  for (const [what, m] of Object.entries(missing)) {
    if (m.lost > 0) violation(`${m.lost} ${what} lost (e.g. ${JSON.stringify(m.sample)})`);
    if (m.unfinished > 0)
      violation(`${m.unfinished} ${what} still unfinished after the drain (e.g. ${JSON.stringify(m.sample)})`);
  }
  const multiAccepted = [...orders.values()].filter((o) => o.accepted > 1).length;

  // ---- figures
  const { rows: reruns } = await admin.query<{
    b_runs: number;
    b_instances: number;
    item_runs: number;
    item_instances: number;
  }>(
    `select (select count(*) from ${s}.soak_b_runs)::int as b_runs, (select count(distinct instance_id) from ${s}.soak_b_runs)::int as b_instances,
            (select count(*) from ${s}.soak_item_runs)::int as item_runs, (select count(distinct instance_id) from ${s}.soak_item_runs)::int as item_instances`,
  );
  const { rows: perMinute } = await admin.query<{
    minute: number;
    runs: number;
    p50: number | null;
    p99: number | null;
  }>(
    `select floor(extract(epoch from ended_at - $1::timestamptz) / 60)::int as minute, count(*)::int as runs,
            percentile_cont(0.5) within group (order by extract(epoch from ended_at - inserted_at)) as p50,
            percentile_cont(0.99) within group (order by extract(epoch from ended_at - inserted_at)) as p99
     from ${s}.soak_b_runs where ended_at is not null group by 1 order by 1`,
    [t0Wall],
  );
  const { rows: orderLatency } = await admin.query<{ minute: number; p50: number; p99: number }>(
    `select floor(extract(epoch from at - $1::timestamptz) / 60)::int as minute,
            percentile_cont(0.5) within group (order by extract(epoch from at - inserted_at)) as p50,
            percentile_cont(0.99) within group (order by extract(epoch from at - inserted_at)) as p99
     from ${s}.soak_orders group by 1 order by 1`,
    [t0Wall],
  );
  const { rows: finished } = await admin.query<{ orders: number; items: number; charges: number }>(
    `select (select count(*) from ${s}.soak_orders)::int as orders, (select count(distinct instance_id) from ${s}.soak_item_runs)::int as items,
            (select count(distinct instance_id) from ${s}.soak_b_runs where ended_at is not null)::int as charges`,
  );
  const total = (machine: string, from = 0, to = Infinity) =>
    seconds.filter((x) => x.t > from && x.t <= to).reduce((sum, x) => sum + (x.done[machine] ?? 0), 0);
  const warm = Math.min(60, loadEnded / 4);
  const bDelivered = total("SoakCharge", warm, loadEnded) / (loadEnded - warm);
  const postponements = seconds.reduce((sum, x) => sum + x.postponed, 0);
  const bRuns = reruns[0]!.b_runs;

  // Recovery: from each fault until the 3-s completion rate is back to 80% of the 30 s before it (0 when it never dropped).
  const rateAt = (t: number, pick: (x: Second) => number) => {
    const window = seconds.filter((x) => x.t > t - 3 && x.t <= t);
    return window.reduce((sum, x) => sum + pick(x), 0) / 3;
  };
  const all = (x: Second) => Object.values(x.done).reduce((a, b) => a + b, 0);
  const onlyB = (x: Second) => x.done.SoakCharge ?? 0;
  const recovery = (pick: (x: Second) => number) =>
    faults.map((f) => {
      const before = seconds.filter((x) => x.t > f.at - 30 && x.t <= f.at);
      const baseline = before.reduce((sum, x) => sum + pick(x), 0) / Math.max(1, before.length);
      const start = Math.ceil(f.at);
      let dipped: number | undefined;
      for (let t = start + 1; t <= start + 10; t++) if (rateAt(t, pick) < 0.8 * baseline) dipped ??= t;
      if (dipped === undefined) return 0;
      for (let t = dipped; t <= seconds.length; t++) if (rateAt(t, pick) >= 0.8 * baseline) return t - f.at;
      return seconds.length - f.at;
    });
  const recoveryAll = recovery(all);
  const recoveryB = recovery(onlyB);
  const spread = (values: number[]) => ({
    p50: round(percentile(values, 50), 1),
    p99: round(percentile(values, 99), 1),
    each: values.map((x) => round(x, 1)),
  });
  const ofKind = (kind: FaultKind, values: number[]) => values.filter((_, i) => faults[i]!.kind === kind);
  // Engine errors as the workers sampled them (the last of each worker's second), by message.
  const errorKinds = new Map<string, number>();
  for (const e of workers.errors) {
    const message = e
      .replace(/^[^:]*: /, "")
      .replace(/\d+/g, "N")
      .slice(0, 140);
    errorKinds.set(message, (errorKinds.get(message) ?? 0) + 1);
  }

  const report = {
    seed: SEED,
    environment: { ...environment, loadAverageAtEnd: loadavg().map((x) => round(x, 2)) },
    parameters: {
      minutes: MINUTES,
      aRate: A_RATE,
      bRate: B_RATE,
      workers: WORKERS,
      pool: POOL,
      limit: LIMIT,
      burst: rateLimits.shared.burst,
      keys: KEYS,
    },
    durations: { loadSeconds: round(loadEnded), drainSeconds: round(drained - loadEnded) },
    inserted: { orders: orders.size, charges: charges.length },
    completed: {
      orders: finished[0]!.orders,
      items: finished[0]!.items,
      charges: finished[0]!.charges,
      perSecondDuringLoad: {
        orders: round(total("SoakOrder", warm, loadEnded) / (loadEnded - warm), 1),
        items: round(total("SoakItem", warm, loadEnded) / (loadEnded - warm), 1),
        charges: round(bDelivered, 1),
      },
    },
    b: {
      insertedPerSecond: B_RATE,
      deliveredPerSecond: round(bDelivered, 1),
      limit: LIMIT,
      deliveredVsLimit: round(bDelivered / LIMIT, 3),
      deliveredVsInserted: round(bDelivered / B_RATE, 3),
      backlogAtLoadEnd: Math.max(0, Math.round(B_RATE * loadEnded - total("SoakCharge", 0, loadEnded))),
      perMinute: perMinute.map((m) => ({
        minute: m.minute,
        perSecond: round(m.runs / 60, 1),
        p50s: round(m.p50 ?? NaN, 2),
        p99s: round(m.p99 ?? NaN, 2),
      })),
    },
    orderLatency: orderLatency.map((m) => ({ minute: m.minute, p50s: round(m.p50, 2), p99s: round(m.p99, 2) })),
    postponements: { total: postponements, perRun: round(postponements / Math.max(1, bRuns), 2) },
    faults: {
      injected: faults,
      planned,
      counts: Object.fromEntries(FAULT_KINDS.map((kind) => [kind, faults.filter((f) => f.kind === kind).length])),
      restartsSkipped: restartsSkipped ?? null,
    },
    restarts: faults.flatMap((f, i) =>
      f.kind === "restart" || f.kind === "crash"
        ? [
            {
              at: round(f.at, 1),
              shutdown: f.kind === "crash" ? "immediate" : "fast",
              downSeconds: f.downSeconds!,
              recoverySeconds: { all: round(recoveryAll[i]!, 1), b: round(recoveryB[i]!, 1) },
              lostAcknowledged: f.lostAcknowledged!,
            },
          ]
        : [],
    ),
    reExecuted: {
      charges: bRuns - reruns[0]!.b_instances,
      items: reruns[0]!.item_runs - reruns[0]!.item_instances,
      leasesLost: seconds.reduce((sum, x) => sum + x.leaseLost, 0),
    },
    recoverySeconds: {
      all: spread(recoveryAll),
      b: spread(recoveryB),
      byKind: Object.fromEntries(
        FAULT_KINDS.filter((kind) => faults.some((f) => f.kind === kind)).map((kind) => [
          kind,
          { all: spread(ofKind(kind, recoveryAll)), b: spread(ofKind(kind, recoveryB)) },
        ]),
      ),
    },
    /** [second, completions, of them B, engine errors]: the series the recovery figures are read from. */
    perSecond: seconds.map((x) => [x.t, all(x), onlyB(x), x.errors]),
    deadTuples: samples
      .filter((_, i) => i % 4 === 0 || i === samples.length - 1)
      .map((x) => ({ t: x.t, dead: x.dead, live: x.live })),
    lastVacuum,
    rssMB: samples
      .filter((_, i) => i % 4 === 0 || i === samples.length - 1)
      .map((x) => ({
        t: x.t,
        ...Object.fromEntries(Object.entries(x.rss).map(([k, v]) => [k.replace(`${id}-`, ""), round(v / 2 ** 20)])),
      })),
    loadAverage: samples.map((x) => ({ t: x.t, oneMinute: x.load })),
    errors: {
      engine: seconds.reduce((sum, x) => sum + x.errors, 0),
      engineByMessage: [...errorKinds.entries()]
        .sort((x, y) => y[1] - x[1])
        .slice(0, 8)
        .map(([message, seconds]) => ({ message, seconds })),
      firstEngineErrors: workers.errors.slice(0, 5),
      orchestratorEngine: clientErrors.length,
      insert: inserts,
      signals: { failedTries: failedTries.signal ?? 0, ...signalsSent },
      orchestratorRetries: { ...failedTries },
    },
    warnings: [...workers.warnings],
    workerExits: workers.exits.map((e) => ({ ...e, at: round((e.at - t0) / 1000, 1) })),
    invariants: {
      violations,
      lost: { orders: missing.orders.lost, charges: missing.charges.lost },
      unfinishedAfterDrain: { orders: missing.orders.unfinished, charges: missing.charges.unfinished },
      ordersWithTwoAcceptedSignals: multiAccepted,
      held: violations.length === 0,
    },
  };
  printReport(report);
  if (process.env.SOAK_OUT) await writeFile(process.env.SOAK_OUT, JSON.stringify(report, null, 2) + "\n");

  await workers.stop();
  await client.stop();
  if (!process.env.SOAK_KEEP_SCHEMA) await admin.query(`drop schema ${s} cascade`);
  await admin.end();
  await db.stop();
  process.exitCode = violations.length === 0 ? 0 : 1;
}

type Report = Record<string, unknown> & {
  durations: { loadSeconds: number; drainSeconds: number };
  parameters: {
    minutes: number;
    aRate: number;
    bRate: number;
    workers: number;
    pool: number;
    limit: number;
    burst: number;
  };
  environment: Record<string, unknown>;
};

function printReport(r: Report): void {
  const out = (line = "") => console.log(line);
  const x = r as unknown as {
    inserted: { orders: number; charges: number };
    completed: {
      orders: number;
      items: number;
      charges: number;
      perSecondDuringLoad: { orders: number; items: number; charges: number };
    };
    b: {
      deliveredPerSecond: number;
      limit: number;
      deliveredVsLimit: number;
      deliveredVsInserted: number;
      backlogAtLoadEnd: number;
      perMinute: Array<{ minute: number; perSecond: number; p50s: number; p99s: number }>;
    };
    orderLatency: Array<{ minute: number; p50s: number; p99s: number }>;
    postponements: { total: number; perRun: number };
    faults: { counts: Record<FaultKind, number>; restartsSkipped: string | null };
    restarts: Array<{
      at: number;
      shutdown: string;
      downSeconds: number;
      recoverySeconds: { all: number; b: number };
      lostAcknowledged: { orders: number; charges: number };
    }>;
    reExecuted: { charges: number; items: number; leasesLost: number };
    recoverySeconds: {
      all: { p50: number; p99: number };
      b: { p50: number; p99: number };
      byKind: Record<string, { all: { p50: number; p99: number }; b: { p50: number; p99: number } }>;
    };
    deadTuples: Array<{ t: number; dead: Record<string, number>; live: Record<string, number> }>;
    lastVacuum: Record<string, string | null>;
    rssMB: Array<Record<string, number>>;
    loadAverage: Array<{ t: number; oneMinute: number }>;
    errors: {
      engine: number;
      engineByMessage: Array<{ message: string; seconds: number }>;
      orchestratorEngine: number;
      insert: { failedTries: number; foundOnRetry: number; givenUp: number; lastError: string };
      signals: { failedTries: number; refused: number; givenUp: number };
      orchestratorRetries: Record<string, number>;
    };
    warnings: string[];
    invariants: {
      violations: string[];
      lost: { orders: number; charges: number };
      unfinishedAfterDrain: { orders: number; charges: number };
      held: boolean;
    };
  };
  const e = r.environment;
  out("");
  out(
    `Soak report — ${round(r.durations.loadSeconds / 60, 1)} min of load, ${round(r.durations.drainSeconds)} s of drain; ${r.parameters.workers} workers (pool ${r.parameters.pool});`,
  );
  out(
    `  Postgres ${String(e.postgres)} (${String(e.database)}, autovacuum ${String(e.autovacuum)}, fsync ${String(e.fsync)}, table settings: ${String(e.tableSettings)}); Node ${String(e.node)}; ${String(e.cpus)} × ${String(e.cpuModel)}`,
  );
  out("");
  out(
    `Completed: ${fmt(x.completed.orders)} orders (A) of ${fmt(x.inserted.orders)}, ${fmt(x.completed.items)} children, ${fmt(x.completed.charges)} charges (B) of ${fmt(x.inserted.charges)}`,
  );
  out(
    `  during the load: A ${x.completed.perSecondDuringLoad.orders}/s, children ${x.completed.perSecondDuringLoad.items}/s, B ${x.completed.perSecondDuringLoad.charges}/s`,
  );
  out(
    `B delivered ${x.b.deliveredPerSecond}/s against ${r.parameters.bRate}/s inserted and a limit of ${x.b.limit}/s ` +
      `(${x.b.deliveredVsInserted}× of inserted, ${x.b.deliveredVsLimit}× of the limit); backlog when the load ended ≈ ${fmt(x.b.backlogAtLoadEnd)}`,
  );
  out(`Postponements (step:rate_limited): ${fmt(x.postponements.total)}, ${x.postponements.perRun} per B run`);
  out(`Faults: ${FAULT_KINDS.map((kind) => `${x.faults.counts[kind]} ${FAULT_NAMES[kind]}`).join(", ")}`);
  if (x.faults.restartsSkipped) out(`  ${x.faults.restartsSkipped}`);
  for (const restart of x.restarts)
    out(
      `  restart at ${restart.at} s (${restart.shutdown} shutdown): accepting connections after ${restart.downSeconds} s, ` +
        `throughput back after ${restart.recoverySeconds.all} s (B ${restart.recoverySeconds.b} s); ` +
        `acknowledged before it and gone after: ${restart.lostAcknowledged.orders} orders, ${restart.lostAcknowledged.charges} charges`,
    );
  out(
    `Re-executed: ${x.reExecuted.charges} charges, ${x.reExecuted.items} children ran twice or more; ${x.reExecuted.leasesLost} outcomes discarded (lease lost)`,
  );
  out(
    `Recovery after a fault (3-s rate back to 80% of the 30 s before): all work p50 ${x.recoverySeconds.all.p50} s, p99 ${x.recoverySeconds.all.p99} s; B p50 ${x.recoverySeconds.b.p50} s, p99 ${x.recoverySeconds.b.p99} s`,
  );
  for (const [kind, k] of Object.entries(x.recoverySeconds.byKind))
    out(`  ${kind}: all work p50 ${k.all.p50} s, p99 ${k.all.p99} s; B p50 ${k.b.p50} s, p99 ${k.b.p99} s`);
  const { insert, signals } = x.errors;
  out(
    `Errors: ${x.errors.engine} engine errors reported by the workers, ${x.errors.orchestratorEngine} by the orchestrator's engine; ` +
      `inserts: ${insert.failedTries} statements failed and were retried, ${insert.foundOnRetry} rows found already inserted by a retry (the reply was lost), ${insert.givenUp} rows given up; ` +
      `signals: ${signals.failedTries} tries failed and were retried, ${signals.refused} refused, ${signals.givenUp} given up; ` +
      `checks: ${x.errors.orchestratorRetries.check ?? 0} tries failed and were retried`,
  );
  if (insert.lastError) out(`  last insert given up: ${insert.lastError.slice(0, 200)}`);
  if (x.errors.engineByMessage.length > 0)
    out("  most frequent engine errors (in how many worker-seconds the last one):");
  for (const { message, seconds } of x.errors.engineByMessage) out(`  ${seconds} × ${message}`);
  if (x.warnings.length > 0) out(`Warnings: ${x.warnings.map((w) => w.slice(0, 160)).join(" | ")}`);
  out("");
  out("minute  B/s   B p50 s  B p99 s  A p50 s  A p99 s");
  for (const m of x.b.perMinute) {
    const a = x.orderLatency.find((o) => o.minute === m.minute);
    out(
      `${String(m.minute).padStart(6)}  ${String(m.perSecond).padStart(5)}  ${String(m.p50s).padStart(7)}  ${String(m.p99s).padStart(7)}  ${String(a?.p50s ?? "-").padStart(7)}  ${String(a?.p99s ?? "-").padStart(7)}`,
    );
  }
  out("");
  const tables = Object.keys(x.deadTuples.at(-1)?.dead ?? {}).sort();
  out(`dead tuples (live) over time:   ${tables.join(" | ")}`);
  for (const d of x.deadTuples)
    out(
      `  ${String(d.t).padStart(5)} s  ${tables.map((t) => `${fmt(d.dead[t] ?? NaN)} (${fmt(d.live[t] ?? NaN)})`).join(" | ")}`,
    );
  out(
    `last vacuum: ${Object.entries(x.lastVacuum)
      .map(([t, v]) => `${t} ${v ?? "never"}`)
      .join("; ")}`,
  );
  out("");
  const procs = Object.keys(x.rssMB.at(-1) ?? {}).filter((k) => k !== "t");
  out(`RSS MB over time:   ${procs.join(" | ")}   (the host's 1-min load average)`);
  for (const m of x.rssMB) {
    const load = x.loadAverage.find((l) => l.t === m.t)?.oneMinute ?? "-";
    out(`  ${String(m.t).padStart(5)} s  ${procs.map((p) => String(m[p] ?? "-")).join(" | ")}   (${load})`);
  }
  out("");
  out(
    `Invariants: ${x.invariants.held ? "held" : "VIOLATED"} (lost: ${x.invariants.lost.orders} orders, ${x.invariants.lost.charges} charges; unfinished after the drain: ${x.invariants.unfinishedAfterDrain.orders} orders, ${x.invariants.unfinishedAfterDrain.charges} charges; key overlaps, two accepted or consumed signals, failed instances: checked every 10 s)`,
  );
  for (const v of x.invariants.violations) out(`  ${v}`);
}

await main();
