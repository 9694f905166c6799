/**
 * Concurrency keys: steps of instances sharing a key never overlap (across
 * engines with their own pools), different keys run in parallel, the key is
 * held only while a step runs, and keyed work queued behind a held key blocks
 * nobody else.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { claimedAhead, givenBack } from "../support/buffer.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

/** Each run records its interval by the database clock, so overlaps are checked in SQL. */
async function recordRun(key: string, id: string, work: () => Promise<void>): Promise<void> {
  const { rows } = await db.pool.query<{ run: string }>(
    `insert into ${s}.runs (key, instance_id) values ($1, $2) returning run::text`,
    [key, id],
  );
  await work();
  await db.pool.query(`update ${s}.runs set ended_at = clock_timestamp() where run = $1`, [rows[0]!.run]);
}

const Keyed = defineJob({
  name: "Keyed",
  queue: "keys",
  args: z.object({ key: z.string(), ms: z.number() }),
  perform: async (args, ctx) =>
    recordRun(args.key, ctx.id, () => new Promise((resolve) => setTimeout(resolve, args.ms))),
});

/** Steps that block until the test releases them. */
const gates = new Map<string, () => void>();
const Gated = defineJob({
  name: "Gated",
  queue: "keys",
  args: z.object({ gate: z.string() }),
  perform: (args) => new Promise<void>((resolve) => gates.set(args.gate, resolve)),
});

const Flaky = defineMachine({
  name: "Flaky",
  queue: "keys",
  state: z.object({ mode: z.enum(["fail", "await"]) }),
  steps: {
    start: {
      maxAttempts: 2,
      backoff: { type: "fixed", delay: "1h" },
      run: (ctx) => {
        if (ctx.state.mode === "await") return ctx.await("go", "finish");
        throw new Error("holder fails");
      },
    },
    finish: (ctx) => ctx.done("finished"),
  },
});

const machines = [Keyed, Gated, Flaky];
const nodeA = db.engine({ queues: { keys: 8 }, machines, nodeId: "node-a", pollInterval: 100 });
const nodeB = db.engine({ queues: { keys: 8 }, machines, nodeId: "node-b", pollInterval: 100 });
const client = db.engine({});

beforeAll(async () => {
  await db.pool.query(
    `create table ${s}.runs (run bigserial primary key, key text not null, instance_id bigint not null,
       started_at timestamptz not null default clock_timestamp(), ended_at timestamptz)`,
  );
  await Promise.all([nodeA.start(), nodeB.start(), client.start()]);
});

afterAll(() => {
  for (const release of gates.values()) release();
});

/** Resolves after `engine` has made `n` more claims of `queue`. */
async function overlaps(): Promise<unknown[]> {
  const { rows } = await db.pool.query(
    `select a.key, a.instance_id, b.instance_id as other from ${s}.runs a join ${s}.runs b
       on a.key = b.key and a.run < b.run and a.started_at < coalesce(b.ended_at, 'infinity') and b.started_at < coalesce(a.ended_at, 'infinity')`,
  );
  return rows;
}

describe("concurrency keys", () => {
  it(
    "never overlaps steps of one key across two engines, and runs different keys in parallel",
    { timeout: 60_000 },
    async () => {
      const items = [];
      for (let i = 0; i < 20; i++)
        for (let k = 0; k < 10; k++)
          items.push({ machine: Keyed, args: { key: `k${k}`, ms: 5 }, concurrencyKey: `k${k}` });
      const ids = (await client.insertMany(items)).map((r) => r.id);
      await Promise.all(ids.map((id) => client.wait(id, { timeout: 50_000 })));
      expect(await overlaps()).toEqual([]);
      const { rows } = await db.pool.query<{ n: number; nodes: number }>(
        `select count(*)::int as n, count(distinct t.leased_by)::int as nodes
       from ${s}.runs r join ${s}.instances t on t.id = r.instance_id`,
      );
      expect(rows[0]!.n).toBe(200);
      // Parallelism across keys: some runs of different keys overlapped in time.
      const { rows: parallel } = await db.pool.query<{ n: number }>(
        `select count(*)::int as n from ${s}.runs a join ${s}.runs b
         on a.key <> b.key and a.run < b.run and a.started_at < b.ended_at and b.started_at < a.ended_at`,
      );
      expect(parallel[0]!.n).toBeGreaterThan(0);
      const { rows: keys } = await db.pool.query(
        `select key, holders from ${s}.concurrency_keys where cardinality(holders) > 0 or run_at is not null`,
      );
      expect(keys).toEqual([]);
    },
  );

  it(
    "keyed work queued behind a held key blocks neither other keys nor unkeyed work",
    { timeout: 60_000 },
    async () => {
      const holder = await client.insert(Gated, { args: { gate: "hot" }, concurrencyKey: "hot" });
      await eventually("the hot key's holder running", () => gates.has("hot"));
      const blocked = await client.insertMany(
        Array.from({ length: 2000 }, () => ({ machine: Gated, args: { gate: "never" }, concurrencyKey: "hot" })),
      );
      const others = await client.insertMany([
        ...Array.from({ length: 50 }, (_, i) => ({
          machine: Keyed,
          args: { key: `other${i}`, ms: 1 },
          concurrencyKey: `other${i}`,
        })),
        ...Array.from({ length: 50 }, () => ({ machine: Keyed, args: { key: "unkeyed", ms: 1 } })),
      ]);
      await Promise.all(others.map((r) => client.wait(r.id, { timeout: 30_000 })));
      const explanation = await client.explain(blocked[0]!.id);
      expect(explanation.reasons).toContain(`concurrency key "hot" is held by instance ${holder.id}`);
      expect(explanation.details.concurrencyKey).toEqual({ key: "hot", heldBy: holder.id });
      const { rows } = await db.pool.query<{ status: string; n: number }>(
        `select status, count(*)::int as n from ${s}.instances where concurrency_key = 'hot' group by 1 order by 1`,
      );
      expect(rows).toEqual([
        { status: "runnable", n: 2000 },
        { status: "running", n: 1 },
      ]);
      // Clean up: cancel the queue behind the key, then let the holder finish.
      await db.pool.query(
        `update ${s}.instances set status = 'cancelled' where concurrency_key = 'hot' and status = 'runnable'`,
      );
      gates.get("hot")!();
      await client.wait(holder.id, { timeout: 10_000 });
    },
  );

  it("runs waiting instances of a key by priority, then due time, then insertion", { timeout: 30_000 }, async () => {
    const holder = await client.insert(Gated, { args: { gate: "order" }, concurrencyKey: "order" });
    await eventually("the holder running", () => gates.has("order"));
    const past = new Date(Date.now() - 60_000);
    const a = await client.insert(Keyed, { args: { key: "order", ms: 1 }, concurrencyKey: "order", priority: 5 });
    const b = await client.insert(Keyed, { args: { key: "order", ms: 1 }, concurrencyKey: "order", priority: 1 });
    const c = await client.insert(Keyed, {
      args: { key: "order", ms: 1 },
      concurrencyKey: "order",
      priority: 5,
      runAt: past,
    });
    const d = await client.insert(Keyed, { args: { key: "order", ms: 1 }, concurrencyKey: "order", priority: 1 });
    gates.get("order")!();
    for (const r of [a, b, c, d]) await client.wait(r.id, { timeout: 10_000 });
    const { rows } = await db.pool.query<{ instance_id: string }>(
      `select instance_id::text from ${s}.runs where key = 'order' order by run`,
    );
    expect(rows.map((r) => r.instance_id)).toEqual([b.id, d.id, c.id, a.id]);
    await client.wait(holder.id, { timeout: 10_000 });
  });

  it("a holder that fails and backs off, or awaits, does not hold its key", { timeout: 30_000 }, async () => {
    const failing = await client.insert(Flaky, { state: { mode: "fail" }, concurrencyKey: "shared" });
    const awaiting = await client.insert(Flaky, { state: { mode: "await" }, concurrencyKey: "shared" });
    const after = await client.insert(Keyed, { args: { key: "shared", ms: 1 }, concurrencyKey: "shared" });
    await client.wait(after.id, { timeout: 10_000 });
    await eventually(
      "the failing holder backing off",
      async () =>
        (await client.get(failing.id))?.attempt === 1 && (await client.get(failing.id))?.status === "runnable",
    );
    await eventually("the awaiting holder parked", async () => (await client.get(awaiting.id))?.status === "awaiting");
    // The key is free: nothing holds it while one instance backs off and another awaits.
    const { rows } = await db.pool.query(`select holders from ${s}.concurrency_keys where key = 'shared'`);
    expect(rows).toEqual([{ holders: [] }]);
    await client.signal({ id: awaiting.id }, "go");
    expect((await client.wait(awaiting.id, { timeout: 10_000 })).result).toBe("finished");
    await client.cancel(failing.id);
  });

  it(
    "bulk inserts of the same keys in opposite orders, at the same time, do not deadlock",
    { timeout: 60_000 },
    async () => {
      const later = new Date(Date.now() + 3_600_000);
      const batch = (reverse: boolean) => {
        const keys = Array.from({ length: 100 }, (_, k) => `race${k}`);
        if (reverse) keys.reverse();
        return keys.flatMap((key) =>
          [0, 1].map(() => ({ machine: Gated, args: { gate: "never" }, concurrencyKey: key, runAt: later })),
        );
      };
      for (let round = 0; round < 5; round++) {
        const results = await Promise.all([
          client.insertMany(batch(false)),
          client.insertMany(batch(true)),
          client.insertMany(batch(false)),
        ]);
        expect(results.map((r) => r.length)).toEqual([200, 200, 200]);
      }
      const { rows } = await db.pool.query<{ n: number }>(
        `select count(*)::int as n from ${s}.concurrency_keys where key like 'race%' and run_at is not null`,
      );
      expect(rows[0]!.n).toBe(100);
      await db.pool.query(`update ${s}.instances set status = 'cancelled' where concurrency_key like 'race%'`);
    },
  );

  it(
    "a busy node gives keyed work it claimed ahead back within a second (it holds the key while the work waits)",
    { timeout: 30_000 },
    async () => {
      const GatedAhead = defineJob({
        name: "GatedAhead",
        queue: "ahead",
        args: z.object({ gate: z.string() }),
        perform: (args) => new Promise<void>((resolve) => gates.set(args.gate, resolve)),
      });
      const KeyedAhead = defineJob({ name: "KeyedAhead", queue: "ahead", args: z.object({}), perform: () => "ran" });
      // One slot, taken by a step that waits for the test; its claim-ahead buffer has room for one more row.
      const busy = db.engine({
        queues: { ahead: 1 },
        machines: [GatedAhead, KeyedAhead],
        nodeId: "busy",
        pollInterval: 50,
      });
      await busy.start();
      const holder = await client.insert(GatedAhead, { args: { gate: "ahead" } });
      await eventually("the busy node's slot taken", () => gates.has("ahead"));
      const keyed = await client.insertMany(
        Array.from({ length: 5 }, () => ({ machine: KeyedAhead, args: {}, concurrencyKey: "ahead:x" })),
      );
      const ids = keyed.map((k) => k.id);
      // The busy node claims the key's next instance ahead while its slot is taken: the key is held...
      await claimedAhead(db, ids, "busy", 1);
      // ...until its buffer gives it back, uncharged, having waited a second for the slot.
      await givenBack(db, ids, 5);
      const idle = db.engine({ queues: { ahead: 4 }, machines: [KeyedAhead], nodeId: "idle", pollInterval: 50 });
      await idle.start();
      for (const { id } of keyed) expect((await client.wait(id, { timeout: 10_000 })).result).toBe("ran");
      gates.get("ahead")!();
      await client.wait(holder.id, { timeout: 10_000 });
      await Promise.all([busy.stop(), idle.stop()]);
    },
  );

  it("the database refuses a second running step of a key whatever the caller", async () => {
    const [x, y] = await client.insertMany([
      { machine: Gated, args: { gate: "never" }, concurrencyKey: "guard", runAt: new Date(Date.now() + 3_600_000) },
      { machine: Gated, args: { gate: "never" }, concurrencyKey: "guard", runAt: new Date(Date.now() + 3_600_000) },
    ]);
    await db.pool.query(`update ${s}.instances set status = 'running' where id = $1`, [x!.id]);
    await expect(db.pool.query(`update ${s}.instances set status = 'running' where id = $1`, [y!.id])).rejects.toThrow(
      /concurrency key "guard" would run 2 steps at once, over its limit of 1/,
    );
    await db.pool.query(`update ${s}.instances set status = 'cancelled' where id = any($1::bigint[])`, [
      [x!.id, y!.id],
    ]);
  });
});
