/**
 * Database faults at PR size: the database goes away
 * under load and comes back, the engine's connections are terminated again
 * and again, the LISTEN socket dies silently, and the pool is smaller than the
 * concurrency. In every case the process must not crash, nothing may be lost,
 * transactional effects happen exactly once and external ones at least once,
 * and the engine recovers by itself.
 *
 * The restart and termination cases run on a Postgres server of their own (restartable-postgres.ts):
 * the shared test server is never restarted, and pg_terminate_backend on
 * 'gen-durable%' there would hit the engines of other test files.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { ConfigError, GenDurable, InstanceTerminatedError, migrate, type EngineEvents } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import {
  FaultJob,
  HoldClient,
  Ping,
  Pong,
  ShortTx,
  faultLedgerSql,
  useFaultLedger,
} from "./fixtures/fault-machines.js";
import { startHalfOpenProxy, startupApplicationName, type HalfOpenProxy } from "./fixtures/half-open-proxy.js";
import { startRestartablePostgres, type RestartablePostgres } from "./fixtures/restartable-postgres.js";

const db = await useTestDatabase(import.meta.url);

/** A half-open proxy in front of the test database, and the database URL through it. */
async function proxied(): Promise<{ proxy: HalfOpenProxy; url: string }> {
  const upstream = new URL(db.url);
  const proxy = await startHalfOpenProxy({ host: upstream.hostname, port: Number(upstream.port || 5432) });
  const url = new URL(db.url);
  url.hostname = "127.0.0.1";
  url.port = String(proxy.port);
  return { proxy, url: url.toString() };
}

/** What would crash a real process: recorded here, asserted empty by every scenario. */
const crashes: string[] = [];
const onRejection = (error: unknown) =>
  void crashes.push(`unhandledRejection: ${String((error as Error)?.stack ?? error)}`);
const onException = (error: Error) => void crashes.push(`uncaughtException: ${String(error?.stack ?? error)}`);
process.on("unhandledRejection", onRejection);
process.on("uncaughtException", onException);
afterAll(() => {
  process.off("unhandledRejection", onRejection);
  process.off("uncaughtException", onException);
});

const JOBS = 2000;
const BATCH = 100;

interface LoadRun {
  schema: string;
  engine: GenDurable;
  check: pg.Pool;
  errors: Array<EngineEvents["engine:error"]>;
  /** Correlation keys whose insert resolved. */
  acked: string[];
  /** Instances whose transactional effect committed so far (for pacing the faults). */
  effects(): Promise<number>;
  /** Resolves when every batch has been inserted (each retried until it resolves). */
  produced: Promise<void>;
  close(): Promise<void>;
}

/**
 * Starts an engine on a fresh schema of `url` and a producer that inserts JOBS
 * FaultJobs in batches, retrying a batch that fails (with the same correlation
 * keys) until it resolves, as a client that must not lose work does.
 */
async function startLoad(url: string, label: string): Promise<LoadRun> {
  const schema = `faults_${label}_${process.pid}`;
  await migrate({ connectionString: url, schema });
  const check = new pg.Pool({ connectionString: url, max: 2, application_name: "faults-check" });
  check.on("error", () => {});
  await check.query(faultLedgerSql(schema));
  const ledger = new pg.Pool({ connectionString: url, max: 4, application_name: "faults-ledger" });
  ledger.on("error", () => {});
  useFaultLedger(ledger, schema);

  const engine = new GenDurable({
    connectionString: url,
    schema,
    queues: { faults: 16 },
    machines: [FaultJob],
    poolSize: 6,
    leaseDuration: "2s",
    reaperInterval: "500ms",
    pollInterval: "200ms",
    listenerHeartbeat: "1s",
  });
  const errors: Array<EngineEvents["engine:error"]> = [];
  engine.on("engine:error", (e) => errors.push(e));
  await engine.start();

  const acked: string[] = [];
  const produced = (async () => {
    for (let b = 0; b < JOBS / BATCH; b++) {
      const items = Array.from({ length: BATCH }, (_, i) => ({
        machine: FaultJob,
        state: { n: b * BATCH + i },
        correlationKey: `job:${b * BATCH + i}`,
      }));
      const deadline = Date.now() + 60_000;
      for (;;) {
        try {
          await engine.insertMany(items);
          break;
        } catch (error) {
          if (Date.now() > deadline) throw error;
          await new Promise((resolve) => setTimeout(resolve, 100));
        }
      }
      acked.push(...items.map((item) => item.correlationKey));
      // Spread the inserts over the run, so faults also hit inserts.
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  })();
  produced.catch(() => {});

  return {
    schema,
    engine,
    check,
    errors,
    acked,
    produced,
    effects: async () =>
      (await check.query<{ n: number }>(`select count(*)::int as n from "${schema}".fault_effects`)).rows[0]!.n,
    close: async () => {
      await engine.stop();
      await check.query(`drop schema if exists "${schema}" cascade`).catch(() => {});
      await check.end();
      await ledger.end();
    },
  };
}

/**
 * Which LISTEN connections count as opened after the faults: those whose backend started after the
 * restart, or those that no kill reached. (A backend's start is taken at fork, before its startup
 * packet names it: one the listener was opening during the last kill escaped that kill unnamed,
 * yet started before it.)
 */
type Recovered = { startedAfter: Date } | { notAmong: Set<string> };

/** A backend's identity across pid reuse: its pid and when it started. */
const backendOf = (row: { pid: number; backend_start: Date }) => `${row.pid}@${row.backend_start.toISOString()}`;

/**
 * Every check of "nothing lost, effects as promised, recovered by itself" after a load run;
 * `recovered` tells the listener's connection after the faults from those the faults hit.
 */
async function assertIntact(run: LoadRun, recovered: Recovered): Promise<void> {
  const { check, schema } = run;
  await run.produced;
  expect(run.acked).toHaveLength(JOBS);
  await eventually(
    "every instance done",
    async () =>
      (await check.query<{ n: number }>(`select count(*)::int as n from "${schema}".instances where status <> 'done'`))
        .rows[0]!.n === 0,
    90_000,
  ).catch(async (error: unknown) => {
    const { rows } = await check.query(`select status, count(*)::int as n from "${schema}".instances group by 1`);
    throw new Error(
      `${String(error)}; statuses ${JSON.stringify(rows)}; engine errors ${JSON.stringify(summarize(run.errors))}`,
    );
  });

  // I1: every acknowledged insert exists. A batch retried after an ambiguous commit may have
  // inserted a key twice (the first instance was already done, so the key was free again):
  // allowed by the contract (keys are unique among live instances), and counted below.
  const { rows: keys } = await check.query<{ keys: number; instances: number }>(
    `select count(distinct correlation_key)::int as keys, count(*)::int as instances from "${schema}".instances where correlation_key = any($1)`,
    [run.acked],
  );
  expect(keys[0]!.keys).toBe(JOBS);
  // I3: the transactional effect exactly once per instance; the external one at least once.
  const { rows: effects } = await check.query(
    `select i.id, count(e.*)::int as n from "${schema}".instances i left join "${schema}".fault_effects e on e.instance_id = i.id group by i.id having count(e.*) <> 1`,
  );
  expect(effects).toEqual([]);
  const { rows: missing } = await check.query(
    `select i.id from "${schema}".instances i where not exists (select 1 from "${schema}".fault_external x where x.instance_id = i.id)`,
  );
  expect(missing).toEqual([]);
  // I5: no lease left behind.
  const { rows: running } = await check.query(`select id from "${schema}".instances where status = 'running'`);
  expect(running).toEqual([]);

  // Recovered by itself: the listener is back on a connection opened after the last fault...
  await eventually(
    "a LISTEN connection opened after the faults",
    async () => {
      const { rows } = await check.query<{ pid: number; backend_start: Date }>(
        `select pid, backend_start from pg_stat_activity where application_name = 'gen-durable-listen'`,
      );
      const fresh = rows.filter((r) =>
        "startedAfter" in recovered ? r.backend_start > recovered.startedAfter : !recovered.notAmong.has(backendOf(r)),
      );
      return fresh.length === 1;
    },
    30_000,
  );
  // ...and new work runs.
  const { id } = await run.engine.insert(FaultJob, { state: { n: -1 } });
  expect((await run.engine.wait(id, { timeout: 20_000 })).status).toBe("done");
  expect(crashes).toEqual([]);

  const { rows: extra } = await check.query<{ external: number; attempts: number }>(
    `select (select count(*)::int from "${schema}".fault_external) as external, (select count(*)::int from "${schema}".transitions where outcome <> 'done') as attempts`,
  );
  console.log(
    `${schema}: ${keys[0]!.instances} instances for ${JOBS} keys; external effects ${extra[0]!.external}; ` +
      `failed or reaped attempts ${extra[0]!.attempts}; engine errors ${JSON.stringify(summarize(run.errors))}`,
  );
}

function summarize(errors: Array<EngineEvents["engine:error"]>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const { loop, error } of errors) {
    const key = `${loop}: ${String((error as Error)?.message ?? error).slice(0, 80)}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}

describe("database faults under load", () => {
  let server: RestartablePostgres;
  beforeAll(async () => {
    server = await startRestartablePostgres();
  }, 120_000);
  afterAll(async () => {
    await server?.destroy();
  });

  it("survives Postgres restarts mid-load", { timeout: 240_000 }, async () => {
    const run = await startLoad(server.url, "restart");
    try {
      let lastFaultAt = new Date();
      for (let restart = 0; restart < 2; restart++) {
        const before = await eventually(
          "steady work",
          async () => {
            const n = await run.effects();
            return n >= (restart + 1) * 300 ? n : 0;
          },
          60_000,
        );
        lastFaultAt = new Date();
        await server.stop();
        // Down for a moment, as in a restart or a failover: inserts, claims, commits and LISTEN all fail meanwhile.
        await new Promise((resolve) => setTimeout(resolve, 1000));
        await server.start();
        console.log(`restart ${restart + 1} after ${before} effects`);
      }
      // The faults really hit the engine.
      expect(run.errors.length).toBeGreaterThan(0);
      expect(run.errors.some((e) => e.loop === "listener")).toBe(true);
      await assertIntact(run, { startedAfter: lastFaultAt });
    } finally {
      await run.close();
    }
  });

  it("survives its connections being terminated again and again", { timeout: 240_000 }, async () => {
    const run = await startLoad(server.url, "terminate");
    try {
      await eventually("steady work", async () => (await run.effects()) >= 200, 60_000);
      // Every 300 ms, kill every backend of the engine (pool and LISTEN), for 25 rounds.
      let terminated = 0;
      let listenersTerminated = 0;
      let roundsUnderLoad = 0;
      const killed = new Set<string>();
      for (let round = 0; round < 25; round++) {
        if ((await run.effects()) < JOBS) roundsUnderLoad++;
        const { rows } = await run.check.query<{ application_name: string; pid: number; backend_start: Date }>(
          `select application_name, pid, backend_start from pg_stat_activity where application_name like 'gen-durable%' and pid <> pg_backend_pid() and pg_terminate_backend(pid)`,
        );
        for (const row of rows) killed.add(backendOf(row));
        terminated += rows.length;
        listenersTerminated += rows.filter((r) => r.application_name === "gen-durable-listen").length;
        await new Promise((resolve) => setTimeout(resolve, 300));
      }
      console.log(
        `terminated ${terminated} backends (${listenersTerminated} LISTEN), ${roundsUnderLoad} rounds under load, then ${await run.effects()} effects`,
      );
      expect(terminated).toBeGreaterThan(25);
      expect(listenersTerminated).toBeGreaterThan(0);
      expect(roundsUnderLoad).toBeGreaterThanOrEqual(5);
      // The listener reconnects after each kill: it must be on a backend that no kill reached.
      await assertIntact(run, { notAmong: killed });
    } finally {
      await run.close();
    }
  });
});

describe("a LISTEN socket that dies silently", () => {
  let proxy: HalfOpenProxy;
  afterAll(async () => {
    await proxy?.close();
  });

  it("rejects a bad listenerHeartbeat by name", () => {
    expect(() => new GenDurable({ connectionString: db.url, listenerHeartbeat: "50ms" })).toThrow(
      /listenerHeartbeat must be at least 100 ms, got 50 ms/,
    );
    expect(() => new GenDurable({ connectionString: db.url, listenerHeartbeat: "soon" as never })).toThrow(ConfigError);
    expect(() => new GenDurable({ connectionString: db.url, listenerHeartbeat: "soon" as never })).toThrow(
      /listenerHeartbeat/,
    );
  });

  it("parses application_name from a startup message", () => {
    const body = Buffer.from("user\0me\0application_name\0gen-durable-listen\0\0");
    const packet = Buffer.alloc(8 + body.length);
    packet.writeInt32BE(packet.length, 0);
    packet.writeInt32BE(196608, 4);
    body.copy(packet, 8);
    expect(startupApplicationName(packet)).toBe("gen-durable-listen");
    expect(startupApplicationName(Buffer.from([0, 0, 0, 8, 4, 210, 22, 47]))).toBeUndefined(); // SSLRequest
  });

  it(
    "keeps working by polling, detects the dead socket, reconnects, and NOTIFY wakes it again",
    { timeout: 120_000 },
    async () => {
      const through = await proxied();
      proxy = through.proxy;
      const viaProxy = through.url;
      const options = { connectionString: viaProxy, schema: db.schema, listenerHeartbeat: "500ms" } as const;
      // A polls every 300 ms; B polls every 10 minutes, so only NOTIFY (or a reconnect's wake-all) can wake it.
      const a = new GenDurable({
        ...options,
        queues: { ping: 2 },
        machines: [Ping],
        pollInterval: "300ms",
        nodeId: "proxy-a",
      });
      const b = new GenDurable({
        ...options,
        queues: { pong: 2 },
        machines: [Pong],
        pollInterval: "10m",
        nodeId: "proxy-b",
      });
      const errors: Array<EngineEvents["engine:error"] & { node: string }> = [];
      a.on("engine:error", (e) => errors.push({ ...e, node: "a" }));
      b.on("engine:error", (e) => errors.push({ ...e, node: "b" }));
      const client = db.engine(); // straight to Postgres, not through the proxy
      await client.start();
      const isListen = (name: string | undefined) => name === "gen-durable-listen";
      const liveListeners = () =>
        proxy.connections().filter((c) => isListen(c.applicationName) && c.open && !c.dead).length;
      try {
        await a.start();
        await b.start();
        await eventually("both listeners connected", () => liveListeners() === 2);
        // NOTIFY works before the fault: B runs a Pong at once although it never polls.
        const first = await client.insert(Pong, { state: { n: 1 } });
        expect((await client.wait(first.id, { timeout: 15_000 })).result).toEqual({ n: 1 });

        // The LISTEN sockets go silent; new LISTEN connections are swallowed too, until heal().
        const cutAt = Date.now();
        const attemptsBefore = proxy.accepted.filter(isListen).length;
        proxy.blackhole(isListen);

        // Work inserted meanwhile still runs on A, found by polling.
        const during = await client.insert(Ping, { state: { n: 2 } });
        expect((await client.wait(during.id, { timeout: 15_000 })).result).toEqual({ n: 2 });

        // Each heartbeat notices its dead socket (within 2 heartbeats of 500 ms; bound generous for a loaded box)...
        await eventually(
          "both heartbeats to detect the dead socket",
          () => {
            const nodes = new Set(
              errors
                .filter((e) => e.loop === "listener" && /did not answer a ping/.test(String(e.error)))
                .map((e) => e.node),
            );
            return nodes.size === 2;
          },
          15_000,
        );
        const detectedMs = Date.now() - cutAt;
        // ...and keeps trying: reconnects into the black hole time out instead of hanging forever.
        await eventually(
          "repeated reconnect attempts while partitioned",
          () => proxy.accepted.filter(isListen).length >= attemptsBefore + 4,
          20_000,
        );
        expect(errors.some((e) => e.loop === "listener" && /timeout|did not answer/i.test(String(e.error)))).toBe(true);

        proxy.heal();
        await eventually("both listeners back", () => liveListeners() === 2, 20_000);
        // A Pong now may be picked up by the reconnect's wake-all; the next one only by NOTIFY.
        const second = await client.insert(Pong, { state: { n: 3 } });
        expect((await client.wait(second.id, { timeout: 15_000 })).result).toEqual({ n: 3 });
        const third = await client.insert(Pong, { state: { n: 4 } });
        expect((await client.wait(third.id, { timeout: 15_000 })).result).toEqual({ n: 4 });
        console.log(
          `half-open LISTEN detected after ${detectedMs} ms; ${proxy.accepted.filter(isListen).length - attemptsBefore} reconnect attempts`,
        );
        expect(crashes).toEqual([]);
      } finally {
        await a.stop();
        await b.stop();
      }
    },
  );
});

describe("a pool smaller than the concurrency", () => {
  it("never lets lease renewal queue behind step work", { timeout: 120_000 }, async () => {
    // 1.5 s leases, renewed every 0.5 s; the reaper looks every 200 ms. Ten steps at once on two connections:
    // four hold their transaction's connection for 3 s each, so the others wait many lease periods for one.
    const engine = db.engine({
      poolSize: 2,
      queues: { pool: 10 },
      machines: [HoldClient, ShortTx],
      leaseDuration: "1500ms",
      reaperInterval: "200ms",
    });
    const lost: unknown[] = [];
    const failed: unknown[] = [];
    let renewals = 0;
    engine.on("lease:lost", (facts) => lost.push(facts));
    engine.on("instance:failed", (e) => failed.push(e));
    const errors: Array<EngineEvents["engine:error"]> = [];
    engine.on("engine:error", (e) => errors.push(e));
    const ticks: string[] = [];
    let started = Date.now();
    engine.on("loop:tick", (tick) => {
      if (tick.loop === "lease") {
        renewals += tick.count;
        ticks.push(`${Date.now() - started}:${tick.count}/${Math.round(tick.durationMs)}ms`);
      }
    });
    await engine.start();
    started = Date.now();
    const holders = await engine.insertMany(
      Array.from({ length: 4 }, () => ({ machine: HoldClient, state: { holdMs: 3000 } })),
    );
    const shorts = await engine.insertMany(Array.from({ length: 8 }, (_, n) => ({ machine: ShortTx, state: { n } })));
    for (const { id } of [...holders, ...shorts]) {
      const final = await engine.wait(id, { timeout: 30_000 }).catch(async (error: unknown) => {
        // A hang: show what every connection of the engine is doing.
        const { rows: activity } = await db.pool.query(
          `select application_name, state, wait_event_type, wait_event, left(query, 120) as query from pg_stat_activity where application_name like 'gen-durable%' and datname = current_database()`,
        );
        const { rows: instances } = await db.pool.query(
          `select id, machine, status, attempt, lease_expires_at > now() as leased from "${db.schema}".instances where id = any($1)`,
          [[...holders, ...shorts].map((r) => r.id)],
        );
        const pool = (engine as unknown as { pool: pg.Pool }).pool;
        throw new Error(
          `${String(error)}\npool total ${pool.totalCount} idle ${pool.idleCount} waiting ${pool.waitingCount}\n${JSON.stringify(activity)}\n${JSON.stringify(instances)}`,
        );
      });
      expect(
        final.status,
        `${final.machine} ${id}: ${final.error?.message}; lease ticks ${ticks.join(" ")}; errors ${JSON.stringify(summarize(errors))}`,
      ).toBe("done");
    }
    const elapsed = Date.now() - started;

    // No lease expired: nothing lost, nothing reaped, nothing ran twice (maxAttempts is 1). Each job's
    // one transition is its done, kept in its instance row: any history row would be a lost attempt...
    const ids = [...holders, ...shorts].map((r) => r.id);
    const { rows } = await db.pool.query(
      `select outcome, count(*)::int as n from "${db.schema}".transitions where instance_id = any($1) group by 1
       union all
       select 'done', count(*)::int from "${db.schema}".instances where id = any($1) and done_duration_ms is not null`,
      [ids],
    );
    expect(
      rows,
      `lease ticks (ms since start: renewed/duration) ${ticks.join(" ")}; errors ${JSON.stringify(summarize(errors))}`,
    ).toEqual([{ outcome: "done", n: ids.length }]);
    expect(lost).toEqual([]);
    expect(failed).toEqual([]);
    // ...although the work outlasted several leases while steps waited for a connection, renewed meanwhile.
    expect(elapsed).toBeGreaterThan(3 * 1500);
    expect(renewals).toBeGreaterThan(0);
    // The pool drains: nobody is left waiting for a connection.
    const pool = (engine as unknown as { pool: pg.Pool }).pool;
    await eventually("the pool to drain", () => pool.waitingCount === 0);
    expect(crashes).toEqual([]);
  });
});

describe("stop() when the database goes silent", () => {
  let proxy: HalfOpenProxy | undefined;
  afterAll(async () => {
    await proxy?.close();
  });

  it("gives up on what it cannot finish after a lease, reports it, and returns", { timeout: 60_000 }, async () => {
    const through = await proxied();
    proxy = through.proxy;
    const viaProxy = through.url;
    const engine = new GenDurable({
      connectionString: viaProxy,
      schema: db.schema,
      queues: { pool: 2 },
      machines: [HoldClient],
      leaseDuration: "1s",
      shutdownGrace: 100,
      listenerHeartbeat: "500ms",
      nodeId: "silent-stop",
    });
    const errors: string[] = [];
    engine.on("engine:error", (e) => errors.push(`${e.loop}: ${String((e.error as Error)?.message ?? e.error)}`));
    const client = db.engine();
    await client.start();
    await engine.start();
    // A transactional step is mid-query when every connection goes silent.
    const { id } = await client.insert(HoldClient, { state: { holdMs: 60_000 } });
    await eventually("the step running", async () => (await client.get(id))?.status === "running");
    proxy.blackhole(() => true);
    const started = Date.now();
    await engine.stop();
    // Each part of stop() waits at most one lease (1 s); a hang would time this test out.
    expect(Date.now() - started).toBeLessThan(30_000);
    expect(errors.some((e) => /^stop: stop\(\) gave up waiting for/.test(e))).toBe(true);
    // Its lease has expired by now: another node of this file may have reaped and failed it (maxAttempts 1).
    await client.cancel(id).catch((error: unknown) => {
      if (!(error instanceof InstanceTerminatedError)) throw error;
    });
  });
});
