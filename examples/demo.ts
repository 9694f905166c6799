/**
 * `npm run demo`: gen-durable in about fifteen seconds.
 *
 *   1. The Checkout machine of the README, end to end: insert with a correlation
 *      key, park on a signal, a webhook that only knows the business key
 *      signals it, done.
 *   2. Crash recovery: a worker process is SIGKILLed in the middle of a slow
 *      step; a fresh worker picks the instance up at the last committed step.
 *
 * Every committed transition is printed from `engine.history(id)`, the record
 * in Postgres, as it appears. With DATABASE_URL unset it runs on an embedded
 * Postgres that it starts and removes; with DATABASE_URL set it uses a
 * throw-away schema there and drops it at the end.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { startDevDatabase, type DevDatabase } from "../dev/postgres.js";
import { GenDurable, migrate, type Transition } from "../src/index.js";
import { Checkout, Fulfilment, PACK_MS, type StepReport } from "./machines.js";

const DEADLINE_MS = 60_000;
const WEBHOOK_AFTER_MS = 700;
const KILL_AFTER_MS = 700;
const LEASE = "2s";

// ------------------------------------------------------------------ output

const color = process.stdout.isTTY === true && !process.env.NO_COLOR;
const paint = (code: number) => (text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
const bold = paint(1);
const dim = paint(2);
const red = paint(31);
const green = paint(32);
const yellow = paint(33);
const cyan = paint(36);

/** Seconds since this process started (performance.now() counts from then). */
const elapsed = () => (performance.now() / 1000).toFixed(2);

/** Set on Ctrl-C: from then on the demo only cleans up, silently. */
let interrupted = false;

/** One event, one line: time since start, who did it, what happened. */
function say(who: string, text: string): void {
  if (interrupted) return;
  console.log(`  ${dim(`+${elapsed().padStart(5)}s`)}  ${cyan(who.padEnd(13))} ${text}`);
}

function heading(text: string): void {
  console.log(`\n${bold(text)}`);
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
const took = (t: Transition) => (t.durationMs === null ? "" : dim(` (step took ${t.durationMs} ms)`));

/** A committed transition in words. */
function describeTransition(t: Transition): string {
  const from = t.fromStep ?? "?";
  switch (t.outcome) {
    case "next":
      return `${green("committed")} ${from} → ${t.toStep}${took(t)}`;
    case "await":
      return `${green("committed")} ${from} → awaiting a signal; it will run ${t.toStep} when the signal arrives${took(t)}`;
    case "resumed":
      return `${green("committed")} the awaited signal was consumed: runnable again, next step ${t.toStep}`;
    case "done":
      return `${green("committed")} ${from} → done${took(t)}`;
    case "lease_expired":
      return `${yellow("recovered")} by the reaper: the lease expired, its worker is gone; step ${from} is runnable again (attempt ${t.attempt} counted as lost)`;
    case "error":
      return `${yellow("committed")} attempt ${t.attempt} of ${from} failed (${t.error?.message ?? "?"}); it will be retried`;
    case "failed":
      return `${red("committed")} ${from} failed for good: ${t.error?.message ?? "?"}`;
    default:
      return `${green("committed")} ${t.outcome}: ${from} → ${t.toStep ?? "(end)"}`;
  }
}

/** Prints each instance's new transitions from `engine.history(id)` as they are committed. */
class HistoryPrinter {
  private readonly watched = new Map<string, { label: string; printed: number }>();
  private chain: Promise<void> = Promise.resolve();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly engine: GenDurable) {}

  watch(id: string, label: string): void {
    this.watched.set(id, { label, printed: 0 });
    this.timer ??= setInterval(() => void this.flush(), 100);
  }

  /** Prints whatever has been committed and not printed yet. */
  flush(): Promise<void> {
    this.chain = this.chain
      .then(async () => {
        for (const [id, entry] of this.watched) {
          const history = await this.engine.history(id);
          for (const t of history.slice(entry.printed)) say(entry.label, describeTransition(t));
          entry.printed = history.length;
        }
      })
      .catch((error: unknown) => say("demo", red(`could not read history: ${String(error)}`)));
    return this.chain;
  }

  /** Runs `fn` after the transitions committed so far are printed. */
  afterFlush(fn: () => void): Promise<void> {
    return this.flush().then(fn);
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.chain;
  }
}

// ------------------------------------------------------------ worker processes

const workerFile = fileURLToPath(new URL("./demo-worker.ts", import.meta.url));
const tsxLoader = import.meta.resolve("tsx");
const children = new Set<ChildProcess>();

interface Worker {
  name: string;
  pid: number;
  ready: Promise<void>;
  exited: Promise<void>;
  /** Resolves when the worker starts running `step`. */
  starts(step: string): Promise<void>;
  /** Graceful: SIGTERM, then SIGKILL after 3 s. */
  stop(): Promise<void>;
}

/** Forks a worker node: its own Node.js process, its own connections, its own loops. */
function startWorker(name: string, env: Record<string, string>, printer: HistoryPrinter): Worker {
  const child = spawn(process.execPath, ["--import", tsxLoader, workerFile], {
    env: { ...process.env, ...env, DEMO_WORKER: name },
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  children.add(child);
  const waiting = new Map<string, () => void>();
  const exited = new Promise<void>((resolve) => child.once("exit", () => (children.delete(child), resolve())));
  const ready = new Promise<void>((resolve, reject) => {
    child.once("exit", (code, signal) =>
      reject(new Error(`${name} exited before it was ready (${signal ?? `code ${code}`})`)),
    );
    child.on("message", (message: { type: "ready" } | StepReport) => {
      if (message.type === "ready") resolve();
      if (message.type === "step") {
        // Print what was committed before this step started, then the step.
        void printer.afterFlush(() => {
          say(name, message.message);
          waiting.get(message.step)?.();
        });
      }
    });
  });
  ready.catch(() => {});
  return {
    name,
    pid: child.pid!,
    ready,
    exited,
    starts: (step) =>
      Promise.race([
        new Promise<void>((resolve) => waiting.set(step, resolve)),
        exited.then(() => Promise.reject(new Error(`${name} exited before it ran step ${step}`))),
      ]),
    stop: () => stopChild(child),
  };
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise((resolve) => child.once("exit", resolve));
  child.kill("SIGTERM");
  const timer = setTimeout(() => child.kill("SIGKILL"), 3000);
  await exited;
  clearTimeout(timer);
}

// ---------------------------------------------------------------------- the demo

/** One statement on a connection of its own. */
async function sql(url: string, text: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  client.on("error", () => {});
  await client.connect();
  try {
    return await client.query(text);
  } finally {
    await client.end();
  }
}

async function serverVersion(url: string): Promise<string> {
  const { rows } = await sql(url, "show server_version");
  return String(rows[0]?.server_version ?? "?").split(" ")[0]!;
}

const cleanups: Array<() => Promise<unknown>> = [];

/** Workers first, then engines, then the database; nothing may hold up the exit for long. */
async function cleanUp(): Promise<void> {
  const bounded = async (work: Promise<unknown>) => {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      work.catch(() => {}),
      new Promise((resolve) => (timer = setTimeout(resolve, interrupted ? 3000 : 10_000))),
    ]);
    clearTimeout(timer);
  };
  await bounded(Promise.all([...children].map(stopChild)));
  for (const fn of cleanups.splice(0).reverse()) await bounded(fn());
}

/**
 * The embedded server (dev/postgres.ts) installs no signal hooks: this demo
 * stops workers, engines and then the server itself, and exits with its own
 * code. Where the server cannot start, its error says why and to set
 * DATABASE_URL, and the demo prints it.
 */
async function main(): Promise<void> {
  console.log(bold("gen-durable demo") + dim(" — durable state machines on Postgres"));

  // -- a database
  const starting = startDevDatabase();
  // Registered before it resolves, so that Ctrl-C during start-up still stops it.
  cleanups.push(async () => (await starting).stop());
  const db: DevDatabase = await starting;
  const schema = db.embedded ? "gen_durable" : `gen_durable_demo_${randomBytes(3).toString("hex")}`;
  const applied = await migrate({ connectionString: db.url, schema });
  const client = new GenDurable({ connectionString: db.url, schema });
  cleanups.push(() => client.stop());
  await client.start();
  if (!db.embedded) {
    cleanups.push(() => sql(db.url, `drop schema if exists ${schema} cascade`));
  }
  const printer = new HistoryPrinter(client);
  cleanups.push(() => printer.stop());
  const version = await serverVersion(db.url);
  say(
    "postgres",
    db.embedded
      ? `started an embedded Postgres ${version} (DATABASE_URL is unset)`
      : `using Postgres ${version} at DATABASE_URL, in a throw-away schema`,
  );
  say("migrate()", `applied migration${applied.length === 1 ? "" : "s"} ${applied.join(", ")} to schema ${schema}`);

  // Worker A boots (a few seconds of Node.js and TypeScript start-up) while part 1 runs.
  const env = { DATABASE_URL: db.url, DEMO_SCHEMA: schema };
  const a = startWorker("worker A", env, printer);

  // -- 1. Checkout
  heading("1. The Checkout machine: park on a signal, resume when the webhook fires");
  const node = new GenDurable({
    connectionString: db.url,
    schema,
    queues: { checkout: 5 },
    machines: [Checkout],
    pollInterval: "200ms",
  });
  cleanups.push(() => node.stop());
  await node.start();
  say("node", "an engine started in this process: it runs queue checkout, 5 at a time");

  const { id, inserted } = await client.insert(Checkout, { state: { order: 42 }, correlationKey: "order:42" });
  say(
    "app",
    `insert(Checkout, { state: { order: 42 }, correlationKey: "order:42" }) → id ${id}, inserted: ${inserted}`,
  );
  const twin = await client.insert(Checkout, { state: { order: 42 }, correlationKey: "order:42" });
  say(
    "app",
    `the same insert again → id ${twin.id}, inserted: ${twin.inserted} (one live instance per correlation key)`,
  );
  printer.watch(id, `Checkout#${id}`);

  for (let i = 0; (await client.get(id))?.status !== "awaiting"; i++) {
    if (i > 200) throw new Error("the Checkout instance never reached awaiting");
    await sleep(25);
  }
  await printer.flush();
  say("postgres", `Checkout#${id} is awaiting: no process or timer holds it; it is a row, and survives any restart`);
  await sleep(WEBHOOK_AFTER_MS);
  say(
    "webhook",
    `POST /payments {"order":42,"amount":100} → engine.signal("order:42", "payment_confirmed", { amount: 100 })`,
  );
  await client.signal("order:42", "payment_confirmed", { amount: 100 });
  const checkout = await client.wait(id, { timeout: 15_000 });
  await printer.flush();
  say(`Checkout#${id}`, `${bold(checkout.status)}, result ${JSON.stringify(checkout.result)}`);
  await node.stop();

  // -- 2. Crash recovery
  heading("2. Crash recovery: SIGKILL a worker process in the middle of a step");
  await a.ready;
  say(
    "worker A",
    `started as process ${a.pid}: runs queue fulfilment, holds each claim with a ${LEASE.replace("s", " s")} lease that it keeps renewing`,
  );
  const fulfilment = await client.insert(Fulfilment, { state: { order: 7, trail: [] } });
  const label = `Fulfilment#${fulfilment.id}`;
  say(
    "app",
    `insert(Fulfilment, { state: { order: 7, trail: [] } }) → id ${fulfilment.id}: steps pick → pack (${PACK_MS / 1000} s) → ship`,
  );
  printer.watch(fulfilment.id, label);

  await a.starts("pack");
  await sleep(KILL_AFTER_MS);
  process.kill(a.pid, "SIGKILL");
  await a.exited;
  await printer.flush();
  say(
    "demo",
    red(`SIGKILL → worker A (process ${a.pid}), ${KILL_AFTER_MS / 1000} s into step pack: no clean-up, no goodbye`),
  );
  const orphan = await client.get(fulfilment.id);
  say(
    "postgres",
    `${label} is still ${orphan?.status} at step ${orphan?.step}, leased by a dead process; the committed state survived: trail ${JSON.stringify((orphan?.state as { trail: string[] }).trail)}`,
  );

  const b = startWorker("worker B", env, printer);
  await b.ready;
  say("worker B", `started as process ${b.pid}: its reaper looks for expired leases every 500 ms`);
  const finished = await client.wait(fulfilment.id, { timeout: 20_000 });
  await printer.flush();
  const trail = (finished.result as { trail: string[] }).trail;
  say(label, `${bold(finished.status)}, result trail ${JSON.stringify(trail)}`);

  const history = await client.history(fulfilment.id);
  heading("What happened");
  console.log(`  • pick committed once, by worker A; the crash did not undo it and it did not run again.`);
  console.log(
    `  • pack was interrupted in worker A, and re-ran from scratch in worker B (at-least-once: keep step effects idempotent).`,
  );
  console.log(
    `  • history() has ${history.length} transitions: ${history.map((t) => t.outcome).join(", ")} — each committed exactly once.`,
  );
  await b.stop();
  say("worker B", "stopped with SIGTERM: engine.stop() finishes in-flight steps, then releases its claims");
}

const watchdog = setTimeout(() => {
  console.error(red(`\ndemo: still running after ${DEADLINE_MS / 1000} s; giving up`));
  void cleanUp().finally(() => process.exit(1));
}, DEADLINE_MS);
watchdog.unref();

for (const signal of ["SIGINT", "SIGTERM", "SIGHUP"] as const) {
  process.on(signal, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error(
      `\n${signal}: cleaning up (stopping workers, engines and the database; Ctrl-C again to quit at once)`,
    );
    void cleanUp().finally(() => process.exit(130));
  });
}

try {
  await main();
  await cleanUp();
  console.log(
    `\n${green("✔")} demo finished in ${elapsed()} s; engines stopped, workers gone${process.env.DATABASE_URL ? ", demo schema dropped" : ", embedded Postgres removed"}.`,
  );
  clearTimeout(watchdog);
} catch (error) {
  // After Ctrl-C, errors from the closing database are expected: the signal handler exits.
  if (!interrupted) {
    console.error(red(`\ndemo failed: ${error instanceof Error ? error.message : String(error)}`));
    await cleanUp();
    process.exitCode = 1;
  }
}
