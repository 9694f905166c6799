/**
 * One soak worker process: a GenDurable node on the soak's schema. Reports
 * "ready" once started, then every second its counters (steps, postponements,
 * errors since the last report) and its memory over IPC. SIGKILLed at random
 * by the orchestrator, which forks a new one in its place.
 *
 * env: DATABASE_URL, SOAK_SCHEMA, SOAK_NAME (node id and application_name prefix), SOAK_POOL
 */
import pg from "pg";
import { GenDurable } from "../../src/index.js";
import { machines, useLedger, workerOptions } from "./machines.js";

const send = (message: Record<string, unknown>) =>
  new Promise<void>((resolve) =>
    process.connected ? process.send!(message, undefined, {}, () => resolve()) : resolve(),
  );
process.on("disconnect", () => process.exit(0));

const url = process.env.DATABASE_URL!;
const schema = process.env.SOAK_SCHEMA!;
const name = process.env.SOAK_NAME!;

const ledgerPool = new pg.Pool({ connectionString: url, max: 4, application_name: `${name}-ledger` });
ledgerPool.on("error", () => {});
// A restart of the database breaks busy connections too; the failure reaches the step's query.
ledgerPool.on("connect", (connection) => connection.on("error", () => {}));
useLedger(ledgerPool, schema);
const pool = new pg.Pool({ connectionString: url, max: Number(process.env.SOAK_POOL ?? 10), application_name: name });
pool.on("error", () => {});

const engine = new GenDurable({ pool, schema, machines, nodeId: name, ...workerOptions });
const counts = { started: 0, postponed: 0, leaseLost: 0, errors: 0, done: {} as Record<string, number> };
let lastError = "";
engine.on("step:start", () => void counts.started++);
engine.on("step:rate_limited", () => void counts.postponed++);
engine.on("lease:lost", () => void counts.leaseLost++);
engine.on("instance:done", (e) => void (counts.done[e.machine] = (counts.done[e.machine] ?? 0) + 1));
engine.on("engine:error", ({ loop, error }) => {
  counts.errors++;
  lastError = `${loop}: ${error instanceof Error ? error.message : String(error)}`;
});
const warnings: string[] = [];
engine.on("engine:warning", (w) => void warnings.push(w.message));

for (let delay = 100; ; delay = Math.min(delay * 2, 2000)) {
  try {
    await engine.start();
    break;
  } catch (error) {
    await send({ type: "start-retry", error: String(error) });
    await new Promise((resolve) => setTimeout(resolve, delay));
  }
}
await send({ type: "ready", pid: process.pid });

setInterval(() => {
  const { rss, heapUsed } = process.memoryUsage();
  void send({
    type: "stats",
    rss,
    heapUsed,
    ...counts,
    done: { ...counts.done },
    lastError,
    warnings: warnings.splice(0),
  });
  counts.started = counts.postponed = counts.leaseLost = counts.errors = 0;
  counts.done = {};
  lastError = "";
}, 1000);
