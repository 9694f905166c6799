// One lock order for concurrency keys, path by path. Each path below changes two keyed instances in
// one transaction, in an order of its own (deadlines, leases, the tree, parent ids) that is the
// reverse of the keys' global order. A side connection holds the key that comes first in the global
// order as an engine transaction would (its advisory lock, then its row in concurrency_keys); the
// test waits until the path is blocked by it (pg_blocking_pids), then checks that the path holds
// no row at all (no transaction id yet; the other key's row and its instances' rows free): had it
// one, the side's next key would close a cycle (the deadlocks of `fireTimeouts` resuming in deadline order against an insertMany in key
// order). Then the side lets go and the path finishes.
import type pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { Gates, outcome, sideClient } from "../support/locks.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const gates = new Gates();
const opened: string[] = [];
afterAll(() => {
  for (const name of opened) gates.open(name);
});

/** Parks with a deadline an hour away; the test moves the deadline. */
const Waits = defineMachine({
  name: "Waits",
  queue: "paths",
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.await("never", "end", ctx.state, { timeout: 3_600_000, onTimeout: "end" }),
    end: (ctx) => ctx.done("timed out"),
  },
});

/** Runs until its gate opens. */
const Hangs = defineJob({
  name: "Hangs",
  queue: "paths",
  args: z.object({ gate: z.string() }),
  perform: async ({ gate }) => {
    opened.push(gate);
    await gates.wait(gate);
    return gate;
  },
});

/** Spawned onto a queue nobody serves: it stays runnable, holding its place under its key. */
const Parked = defineJob({ name: "Parked", queue: "paths", args: z.object({}), perform: async () => null });

/** Spawns one child per key, in the order given, and joins them. */
const Tree = defineMachine({
  name: "Tree",
  queue: "paths",
  state: z.object({ keys: z.array(z.string()) }),
  steps: {
    start: (ctx) =>
      ctx.spawn(
        ctx.state.keys.map((key) => ({ machine: Parked, args: {}, queue: "parked", concurrencyKey: key })),
        "join",
      ),
    join: (ctx) => ctx.done(),
  },
});

/** A keyed parent with one child that finishes when its gate opens. */
const Joins = defineMachine({
  name: "Joins",
  queue: "paths",
  state: z.object({ gate: z.string() }),
  steps: {
    start: (ctx) => ctx.spawn([{ machine: Hangs, args: { gate: ctx.state.gate } }], "join"),
    join: (ctx) => ctx.done("joined"),
  },
});

const worker = db.engine({
  queues: { paths: 8 },
  machines: [Waits, Hangs, Parked, Tree, Joins],
  pollInterval: 100,
  reaperInterval: "100ms",
  leaseDuration: "1h",
});
await worker.start();
const client = db.engine();

/** `a` and `b` in the one global order of lock_keys (by the hash of their lock names): [first, second]. */
async function inGlobalOrder(a: string, b: string): Promise<[string, string]> {
  const { rows } = await db.pool.query<{ k: string }>(
    `select k from unnest($1::text[]) k order by hashtextextended('gen_durable:' || $2 || ':key:' || k, 0)`,
    [[a, b], s],
  );
  return [rows[0]!.k, rows[1]!.k];
}

/** Holds `key` as an engine transaction does: its lock (the one lock_keys takes), then its row. */
async function holdKey(key: string): Promise<pg.Client> {
  const side = await sideClient(db.url);
  await side.query("begin");
  await side.query(`select pg_advisory_xact_lock(hashtextextended('gen_durable:' || $2 || ':key:' || $1, 0))`, [
    key,
    s,
  ]);
  // The reaper forgets the rows of idle keys: the row exists, from here on.
  await side.query(`insert into ${s}.concurrency_keys (key) values ($1) on conflict do nothing`, [key]);
  await side.query(`select 1 from ${s}.concurrency_keys where key = $1 for update`, [key]);
  return side;
}

/** The backends waiting for a lock `side` holds, once there is one. */
async function blockedBy(what: string, side: pg.Client): Promise<number[]> {
  const { rows } = await side.query<{ pid: number }>("select pg_backend_pid() as pid");
  return eventually(`${what} to wait for the side's key`, async () => {
    const { rows: waiting } = await db.pool.query<{ pid: number }>(
      `select pid from pg_stat_activity where $1::int = any(pg_blocking_pids(pid))`,
      [rows[0]!.pid],
    );
    return waiting.length > 0 ? waiting.map((w) => w.pid) : null;
  });
}

/**
 * What the blocked backends hold: a backend that has locked or written a row has a transaction id
 * (a row lock is its xid in the row), and the rows of `key` and of `ids` must be free.
 */
async function heldWhileBlocked(pids: number[], key: string, ids: string[]): Promise<string[]> {
  const held: string[] = [];
  const { rows } = await db.pool.query<{ pid: number; xid: string; query: string }>(
    `select pid, backend_xid::text as xid, left(query, 120) as query from pg_stat_activity
     where pid = any($1) and backend_xid is not null`,
    [pids],
  );
  for (const r of rows) held.push(`backend ${r.pid} has written or locked rows (xid ${r.xid}): ${r.query}`);
  // A row the blocked path had locked would stay locked until the side lets go, after this check.
  // Another of the engine's loops may hold one for a moment (the reaper locks idle keys' rows every
  // 100 ms to forget them): so a row counts as held only if it stays locked for two seconds.
  const tryLock = async (what: string, sql: string, values: unknown[]) => {
    let code: string | undefined;
    const free = await outcome(
      eventually(
        `${what} to be free`,
        async () => {
          const result = await outcome(db.pool.query(sql, values));
          if (!result.ok) code = (result.error as { code?: string }).code;
          return result.ok;
        },
        2_000,
      ),
    );
    if (!free.ok) held.push(`${what}: ${code}`);
  };
  await tryLock(`the row of key ${key}`, `select 1 from ${s}.concurrency_keys where key = $1 for update nowait`, [key]);
  for (const id of ids)
    await tryLock(`instance ${id}`, `select 1 from ${s}.instances where id = $1 for update nowait`, [id]);
  return held;
}

async function statusOf(id: string): Promise<string> {
  const { rows } = await db.pool.query<{ status: string }>(`select status from ${s}.instances where id = $1`, [id]);
  return rows[0]!.status;
}

describe("a path that touches two keys waits for the first in the global order holding nothing else", () => {
  it("the await-timeout sweep (deadline order)", async () => {
    const [first, second] = await inGlobalOrder("timeouts-a", "timeouts-b");
    const late = await client.insert(Waits, { state: {}, concurrencyKey: first });
    const early = await client.insert(Waits, { state: {}, concurrencyKey: second });
    await eventually("both awaiting", async () => (await statusOf(late.id)) === "awaiting");
    await eventually("both awaiting", async () => (await statusOf(early.id)) === "awaiting");
    const side = await holdKey(first);
    // Due now, the second key's instance first.
    await db.pool.query(
      `update ${s}.instances set run_at = now() - case id when $1 then interval '2 seconds' else interval '1 second' end
       where id in ($1, $2)`,
      [early.id, late.id],
    );
    const held = await heldWhileBlocked(await blockedBy("the sweep", side), second, [early.id, late.id]);
    await side.query("commit");
    expect(held).toEqual([]);
    for (const { id } of [early, late]) expect((await client.wait(id, { timeout: 10_000 })).result).toBe("timed out");
  });

  it("the reaper (lease order)", async () => {
    const [first, second] = await inGlobalOrder("reaper-a", "reaper-b");
    const late = await client.insert(Hangs, { args: { gate: "reaper-late" }, concurrencyKey: first });
    const early = await client.insert(Hangs, { args: { gate: "reaper-early" }, concurrencyKey: second });
    await eventually("both running", () => gates.reached("reaper-late") && gates.reached("reaper-early"));
    const side = await holdKey(first);
    // Both leases lapse, the second key's first.
    await db.pool.query(
      `update ${s}.instances set lease_expires_at = now() - case id when $1 then interval '2 seconds' else interval '1 second' end
       where id in ($1, $2)`,
      [early.id, late.id],
    );
    const held = await heldWhileBlocked(await blockedBy("the reaper", side), second, [early.id, late.id]);
    await side.query("commit");
    expect(held).toEqual([]);
    await eventually("both reaped", async () => {
      const { rows } = await db.pool.query<{ n: number }>(
        `select count(*)::int as n from ${s}.transitions where instance_id in ($1, $2) and outcome = 'lease_expired'`,
        [early.id, late.id],
      );
      return rows[0]!.n === 2;
    });
  });

  it("cancel of a tree (tree order)", async () => {
    const [first, second] = await inGlobalOrder("cancel-a", "cancel-b");
    // The second key's child is spawned first: the lower id.
    const { id } = await client.insert(Tree, { state: { keys: [second, first] } });
    await eventually("the tree joining", async () => (await statusOf(id)) === "joining");
    const { rows: children } = await db.pool.query<{ id: string }>(
      `select id::text from ${s}.instances where parent_id = $1 order by id`,
      [id],
    );
    const side = await holdKey(first);
    const cancelling = outcome(client.cancel(id, "stop"));
    const held = await heldWhileBlocked(await blockedBy("cancel", side), second, [id, ...children.map((c) => c.id)]);
    await side.query("commit");
    expect(held).toEqual([]);
    expect(await cancelling).toMatchObject({ ok: true });
    for (const c of [id, ...children.map((c) => c.id)]) expect(await statusOf(c)).toBe("cancelled");
  });

  it("the join sweep waking keyed parents (parent order)", async () => {
    const [first, second] = await inGlobalOrder("joins-a", "joins-b");
    // The second key's parent is inserted first: the lower id, swept first.
    const early = await client.insert(Joins, { state: { gate: "joins-early" }, concurrencyKey: second });
    const late = await client.insert(Joins, { state: { gate: "joins-late" }, concurrencyKey: first });
    await eventually("both children running", () => gates.reached("joins-early") && gates.reached("joins-late"));
    // Both children finish while their parents are held, so one sweep counts them together.
    const parents = await sideClient(db.url);
    await parents.query("begin");
    await parents.query(`select 1 from ${s}.instances where id in ($1, $2) for update`, [early.id, late.id]);
    gates.open("joins-early");
    gates.open("joins-late");
    await eventually("both children done", async () => {
      const { rows } = await db.pool.query<{ n: number }>(
        `select count(*)::int as n from ${s}.instances where parent_id in ($1, $2) and status = 'done'`,
        [early.id, late.id],
      );
      return rows[0]!.n === 2;
    });
    const side = await holdKey(first);
    await parents.query("commit");
    const held = await heldWhileBlocked(await blockedBy("the join sweep", side), second, [early.id, late.id]);
    await side.query("commit");
    expect(held).toEqual([]);
    for (const { id } of [early, late]) expect((await client.wait(id, { timeout: 10_000 })).result).toBe("joined");
  });
});

describe("lock_keys", () => {
  // Every version of the schema takes these locks: nodes of different versions running side by
  // side must exclude each other on the same key.
  it("takes each distinct key's advisory lock once, the lock every version takes, and counts them", async () => {
    const conn = await db.pool.connect();
    try {
      await conn.query("begin");
      const { rows } = await conn.query<{ n: number }>(`select ${s}.lock_keys($1::text[]) as n`, [
        ["b", null, "a", "b"],
      ]);
      expect(rows[0]!.n).toBe(2);
      const { rows: held } = await conn.query<{ h: string }>(
        `select ((classid::bigint << 32) | objid::bigint)::text as h from pg_locks
         where locktype = 'advisory' and objsubid = 1 and pid = pg_backend_pid() order by 1`,
      );
      const { rows: expected } = await conn.query<{ h: string }>(
        `select hashtextextended('gen_durable:' || $2 || ':key:' || k, 0)::text as h
         from unnest($1::text[]) as k order by 1`,
        [["a", "b"], s],
      );
      expect(held.map((r) => r.h).sort()).toEqual(expected.map((r) => r.h).sort());
      expect((await conn.query<{ n: number }>(`select ${s}.lock_keys('{}') as n`)).rows[0]!.n).toBe(0);
    } finally {
      await conn.query("rollback");
      conn.release();
    }
  });
});
