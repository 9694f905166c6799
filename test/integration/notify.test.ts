// NOTIFY wakes other nodes without polling, and the LISTEN connection recovers by itself.
import pg from "pg";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, GenDurable, type EngineEvents } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { recordStatements } from "../support/statements.js";

const db = await useTestDatabase(import.meta.url);
const Ping = defineJob({
  name: "Ping",
  queue: "notify",
  args: z.object({ n: z.number() }),
  perform: async (args) => args.n,
});

// Polling every 10 minutes: anything picked up sooner was woken by NOTIFY (or by a reconnect).
const runner = db.engine({
  queues: { notify: 4 },
  machines: [Ping],
  pollInterval: "10m",
  nodeId: `listen-test-${db.schema}`,
});
const errors: Array<EngineEvents["engine:error"]> = [];
runner.on("engine:error", (e) => errors.push(e));
await runner.start();
const client = db.engine();
await client.start();

const listenBackends = async () =>
  (
    await db.pool.query(
      `select pid from pg_stat_activity where application_name = 'gen-durable-listen' and query ilike $1`,
      [`%listen "gen_durable_${db.schema}"%`],
    )
  ).rows.map((r) => r.pid as number);

describe("notify", () => {
  it("a client's insert wakes a node running the queue", async () => {
    await eventually("listener connected", async () => (await listenBackends()).length === 1);
    const { id } = await client.insert(Ping, { args: { n: 1 } });
    expect((await client.wait(id, { timeout: 10_000 })).result).toBe(1);
  });

  it("a lone insert notifies with its own commit; inserts in flight together share a NOTIFY after theirs", async () => {
    // A producer on a pool of its own, whose statements are counted.
    const pool = new pg.Pool({ connectionString: db.url, max: 4 });
    const { texts } = recordStatements(pool);
    const producer = new GenDurable({ pool, schema: db.schema });
    await producer.start();
    try {
      const notifies = () => texts.filter((t) => t.includes("pg_notify($1, q)")).length;
      const { id } = await producer.insert(Ping, { args: { n: 3 } });
      // No NOTIFY after the commit: it went out with it, and woke the runner (which polls every 10 minutes).
      expect(notifies()).toBe(0);
      expect((await producer.wait(id, { timeout: 10_000 })).result).toBe(3);
      const together = await Promise.all([4, 5, 6].map((n) => producer.insert(Ping, { args: { n } })));
      expect(notifies()).toBeGreaterThan(0);
      const done = await Promise.all(together.map((r) => producer.wait(r.id, { timeout: 10_000 })));
      expect(done.map((d) => d.result)).toEqual([4, 5, 6]);
    } finally {
      await producer.stop();
      await pool.end();
    }
  });

  it("an engine that runs queues notifies after its insert returned, never with its commit", async () => {
    // Its own listener would otherwise hear of the row as it commits, and could start the step
    // before insert() returned: a drain(engine) right after the insert would miss its events.
    const pool = new pg.Pool({ connectionString: db.url, max: 4 });
    const { texts } = recordStatements(pool);
    const worker = new GenDurable({ pool, schema: db.schema, queues: { notify: 1 }, machines: [Ping] });
    await worker.start();
    try {
      const notifies = () => texts.filter((t) => t.includes("pg_notify($1, q)")).length;
      const before = notifies();
      const { id } = await worker.insert(Ping, { args: { n: 7 } });
      // A NOTIFY of its own, sent once this node's own claim has gone out (nodeWakeups.broadcast).
      await eventually("the NOTIFY for the other nodes", async () => notifies() === before + 1);
      expect((await worker.wait(id, { timeout: 10_000 })).result).toBe(7);
    } finally {
      await worker.stop();
      await pool.end();
    }
  });

  it("inserts in a caller's transaction notify on commit", async () => {
    const conn = await db.pool.connect();
    try {
      await conn.query("begin");
      const { id } = await client.insert(Ping, { args: { n: 2 }, client: conn });
      await conn.query("commit");
      expect((await client.wait(id, { timeout: 10_000 })).result).toBe(2);
    } finally {
      conn.release();
    }
  });

  it("re-LISTENs after its connection is terminated and wakes everything on reconnect", async () => {
    const [pid] = await eventually("listener connected", async () => {
      const pids = await listenBackends();
      return pids.length === 1 ? pids : null;
    });
    await db.pool.query("select pg_terminate_backend($1)", [pid]);
    // Written behind the engine's back (no NOTIFY) while the listener is down:
    // with polling at 10 minutes, only the wake-all on reconnect can pick it up.
    const { rows } = await db.pool.query(
      `insert into ${db.schema}.instances (machine, step, state, queue) values ('Ping', 'perform', '{"n": 3}', 'notify') returning id::text as id`,
    );
    const id = rows[0].id as string;
    await eventually("a new listener backend", async () => {
      const pids = await listenBackends();
      return pids.length === 1 && pids[0] !== pid;
    });
    expect((await client.wait(id, { timeout: 10_000 })).result).toBe(3);
    expect(errors.some((e) => e.loop === "listener")).toBe(true);
    const after = await client.insert(Ping, { args: { n: 4 } });
    expect((await client.wait(after.id, { timeout: 10_000 })).result).toBe(4);
  });
});
