// The engine behind PgBouncer in transaction-pooling mode (a pgbouncer process of the test's own):
// migrate, insert, signals (kept and awaited), fan-out with a join, concurrency keys, a
// transactional step and cancel all work; named prepared statements are sent unnamed through
// the pooler, and LISTEN, which a transaction pooler cannot carry, is replaced by polling or by
// a direct listenConnectionString.
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine, GenDurable, migrate, type EngineEvents } from "../../src/index.js";
import { isPooled } from "../../src/db/pooler.js";
import { databaseUrl, eventually, useTestDatabase } from "../support/db.js";
import { findPgBouncer, startPgBouncer, type PgBouncer } from "../support/pgbouncer.js";
import { cliInProcess } from "../support/cli.js";

const binary = findPgBouncer();
if (!binary && !process.env.CI) {
  console.warn(
    "test/integration/pgbouncer.test.ts skipped: no pgbouncer binary (install Debian's: apt-get install -y pgbouncer)",
  );
}

const db = await useTestDatabase(import.meta.url);
const QUEUE = "pooled";

const Pick = defineMachine({
  name: "Pick",
  queue: QUEUE,
  state: z.object({ item: z.number() }),
  steps: {
    // A transactional step holds one server connection from start to commit.
    start: {
      transactional: true,
      run: async (ctx) => {
        const { rows } = await ctx.client.query<{ n: number }>("select $1::int * 10 as n", [ctx.state.item]);
        return ctx.done(rows[0]!.n);
      },
    },
  },
});

const Notify = defineJob({
  name: "Notify",
  queue: QUEUE,
  args: z.object({ order: z.number() }),
  perform: (args) => ({ notified: args.order }),
});

const Order = defineMachine({
  name: "Order",
  queue: QUEUE,
  state: z.object({ order: z.number(), paid: z.number().optional() }),
  steps: {
    start: (ctx) => ctx.await("paid", "pick"),
    pick: (ctx) => {
      const paid = (ctx.awaited[0]!.payload as { amount: number }).amount;
      return ctx.spawn(
        [
          { machine: Pick, state: { item: 1 }, concurrencyKey: "warehouse" },
          { machine: Pick, state: { item: 2 }, concurrencyKey: "warehouse" },
          { machine: Pick, state: { item: 3 }, concurrencyKey: "warehouse" },
          { machine: Notify, args: { order: ctx.state.order } },
        ],
        "join",
        { ...ctx.state, paid },
      );
    },
    join: (ctx) =>
      ctx.done({
        order: ctx.state.order,
        paid: ctx.state.paid,
        picked: ctx.children.map((c) => c.result),
      }),
  },
});

describe.skipIf(!binary && !process.env.CI)("behind PgBouncer (transaction pooling)", () => {
  let bouncer: PgBouncer;
  const engines: GenDurable[] = [];

  beforeAll(async () => {
    if (!binary) throw new Error("CI is set but there is no pgbouncer binary: .ci/run installs Debian's pgbouncer");
    bouncer = await startPgBouncer(binary, databaseUrl());
  }, 60_000);

  afterAll(async () => {
    for (const engine of engines) await engine.stop();
    await bouncer?.stop();
  });

  function engine(options: Partial<ConstructorParameters<typeof GenDurable>[0]> = {}) {
    const e = new GenDurable({
      connectionString: bouncer.url,
      queues: { [QUEUE]: 4 },
      machines: [Order, Pick, Notify],
      pollInterval: 100,
      ...options,
    });
    engines.push(e);
    return e;
  }

  it("recognises the pooler on a connection, and a direct connection as direct", async () => {
    for (const [url, expected] of [
      [bouncer.url, true],
      [databaseUrl(), false],
    ] as const) {
      const client = new pg.Client({ connectionString: url });
      await client.connect();
      try {
        expect(await isPooled(client)).toBe(expected);
      } finally {
        await client.end();
      }
    }
  });

  it("runs awaits, kept and awaited signals, fan-out, concurrency keys and cancel; polls instead of LISTEN", async () => {
    const { schema } = db;
    // migrate through the pooler too (a schema of its own, dropped below).
    const fresh = `${schema}_pgb`;
    await migrate({ connectionString: bouncer.url, schema: fresh });
    const warnings: Array<EngineEvents["engine:warning"]> = [];
    const errors: unknown[] = [];
    const e = engine({ schema: fresh });
    e.on("engine:warning", (w) => warnings.push(w));
    e.on("engine:error", (x) => errors.push(x.error));
    await e.start();
    try {
      // A signal kept for an order not inserted yet.
      await e.signal("order:0", "paid", { amount: 100 }, { ifMissing: "keep" });
      const inserted = await e.insertMany(
        Array.from({ length: 12 }, (_, order) => ({
          machine: Order,
          state: { order },
          correlationKey: `order:${order}`,
        })),
      );
      const doomed = await e.insert(Order, { state: { order: 99 }, correlationKey: "order:99" });
      for (let order = 1; order < 12; order++) {
        await e.signal(`order:${order}`, "paid", { amount: 100 + order }, { dedupKey: `pay-${order}` });
        // A retried webhook: deduplicated.
        const again = await e.signal(`order:${order}`, "paid", { amount: 100 + order }, { dedupKey: `pay-${order}` });
        expect(again.duplicate).toBe(true);
      }
      await e.cancel(doomed.id, "customer changed their mind");
      for (const [order, { id }] of inserted.entries()) {
        const done = await e.wait(id, { timeout: 60_000 });
        expect(done.status).toBe("done");
        expect(done.result).toEqual({ order, paid: 100 + order, picked: [10, 20, 30, { notified: order }] });
      }
      expect((await e.get(doomed.id))?.status).toBe("cancelled");
      expect(errors).toEqual([]);
      await eventually("the LISTEN warning", () => warnings.find((w) => w.kind === "listen_pooled"));
      expect(warnings.find((w) => w.kind === "listen_pooled")?.message).toMatch(
        /goes through a connection pooler .* polling every 100 ms .* listenConnectionString/,
      );
    } finally {
      await e.stop();
      const { pool } = db;
      await pool.query(`drop schema if exists ${fresh} cascade`);
    }
  });

  it("runs the CLI through the pooler, leaving no prepared statement on a server connection", async () => {
    // One server connection: whatever one command left on it, the next one meets.
    const single = await startPgBouncer(binary!, databaseUrl(), 1);
    try {
      const env = { DATABASE_URL: single.url };
      for (const order of [1, 2, 3]) {
        const run = await cliInProcess(
          ["insert", "Order", "--queue", QUEUE, "--state", JSON.stringify({ order }), "--schema", db.schema, "--json"],
          env,
        );
        expect(run.code, run.stderr).toBe(0);
      }
      const status = await cliInProcess(["status", "--schema", db.schema], env);
      expect(status.code, status.stderr).toBe(0);
    } finally {
      await single.stop();
    }
  });

  it("listens on listenConnectionString, a direct connection, while everything else goes through the pooler", async () => {
    const { schema, pool } = db;
    const warnings: Array<EngineEvents["engine:warning"]> = [];
    const e = engine({ schema, listenConnectionString: databaseUrl() });
    e.on("engine:warning", (w) => warnings.push(w));
    await e.start();
    const channel = `gen_durable_${schema}`;
    await eventually("a direct LISTEN connection", async () => {
      const { rows } = await pool.query(
        `select 1 from pg_stat_activity where application_name = 'gen-durable-listen' and query = $1`,
        [`listen "${channel}"`],
      );
      return rows.length === 1;
    });
    await e.signal("order:direct", "paid", { amount: 1 }, { ifMissing: "keep" });
    const { id } = await e.insert(Order, { state: { order: 7 }, correlationKey: "order:direct" });
    expect((await e.wait(id, { timeout: 60_000 })).result).toMatchObject({ order: 7, paid: 1 });
    expect(warnings.filter((w) => w.kind === "listen_pooled")).toEqual([]);
  });
});
