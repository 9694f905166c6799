// A claim, and the group commit of outcomes, bring the rows of their concurrency keys up to date
// themselves, one statement for all of them (migration 27), not through the per-row trigger on
// instances: the keys' rows must then read exactly as the trigger would have left them (holders =
// the key's running rows; run_at, queue and priority = the key's next runnable work), and every
// other change (a retry, an outcome in a transaction that goes on, a release) still goes through
// the trigger. A group commit without keyed outcomes leaves the keys' table alone.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, type GenDurable } from "../../src/index.js";
import type pg from "pg";
import { Completer } from "../../src/runtime/completer.js";
import { claimQueries, type ClaimedRow, type OutcomeRow } from "../../src/sql/claims.js";
import { eventually, rowsReadSoFar, useTestDatabase } from "../support/db.js";
import { doneOutcome } from "../support/outcomes.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const QUEUE = "claimkeys";

const Keyed = defineJob({ name: "Keyed", queue: QUEUE, args: z.object({ n: z.number() }), perform: () => null });
const Pair = defineJob({
  name: "Pair",
  queue: QUEUE,
  args: z.object({ k: z.string(), n: z.number() }),
  concurrency: { key: (a) => `pair:${a.k}`, limit: 2 },
  perform: () => null,
});

let client: GenDurable;
beforeAll(async () => {
  client = db.engine({ machines: [Keyed, Pair] });
  await client.start();
});
afterAll(async () => {
  await client.stop();
});

interface KeyRow {
  key: string;
  holders: string[];
  max_running: number;
  queue: string | null;
  priority: number | null;
  run_at: Date | null;
  /** What the keys' rows must say, read from the instances. */
  running: string[];
  next_queue: string | null;
  next_priority: number | null;
  next_run_at: Date | null;
}

/** Every key's row beside what its instances say it must hold. */
async function keyRows(): Promise<KeyRow[]> {
  const { rows } = await db.pool.query<KeyRow>(`
    select c.key, array(select unnest(c.holders)::text order by 1) as holders, c.max_running, c.queue, c.priority, c.run_at,
           array(select i.id::text from ${s}.instances i where i.concurrency_key = c.key and i.status = 'running' order by 1) as running,
           (select i.queue from ${s}.instances i where i.concurrency_key = c.key and i.status = 'runnable' order by i.run_at, i.id limit 1) as next_queue,
           (select min(i.priority) from ${s}.instances i where i.concurrency_key = c.key and i.status = 'runnable') as next_priority,
           (select min(i.run_at) from ${s}.instances i where i.concurrency_key = c.key and i.status = 'runnable') as next_run_at
    from ${s}.concurrency_keys c order by c.key`);
  return rows;
}

function expectKeysCurrent(rows: KeyRow[]): void {
  for (const row of rows) {
    expect({ key: row.key, holders: row.holders }).toEqual({ key: row.key, holders: row.running });
    expect(row.holders.length).toBeLessThanOrEqual(row.max_running);
    expect({ key: row.key, queue: row.queue, priority: row.priority, run_at: row.run_at }).toEqual({
      key: row.key,
      queue: row.next_queue,
      priority: row.next_priority,
      run_at: row.next_run_at,
    });
  }
}

/**
 * Runs `work` in a transaction of its own on one connection and returns what it returned with the
 * calls of the key trigger it made: the change in pg_stat_xact_user_functions over the
 * transaction (which may also count calls of earlier transactions on the connection whose
 * statistics are not reported yet, hence a difference).
 */
async function countingTriggerCalls<T>(work: (conn: pg.PoolClient) => Promise<T>): Promise<[T, number]> {
  const conn = await db.pool.connect();
  try {
    await conn.query("begin");
    await conn.query("set local track_functions = 'pl'");
    const calls = async () =>
      (
        await conn.query<{ calls: number }>(
          `select coalesce(sum(calls), 0)::int as calls from pg_stat_xact_user_functions
           where schemaname = $1 and funcname = 'concurrency_key_changed'`,
          [db.schema],
        )
      ).rows[0]!.calls;
    const before = await calls();
    const result = await work(conn);
    const made = (await calls()) - before;
    await conn.query("commit");
    return [result, made];
  } catch (error) {
    await conn.query("rollback");
    throw error;
  } finally {
    conn.release();
  }
}

const claim = (conn: pg.PoolClient) =>
  claimQueries(db.schema).claim(conn, {
    queue: QUEUE,
    machines: ["Keyed", "Pair"],
    want: 100,
    nodeId: "claim-keys-test",
    leaseMs: 60_000,
    global: null,
    startNow: 3,
    keyedAtMost: 100,
  });

/** A claim of up to 10 rows of `machine` from `queue` on the pool, the first `startNow` charged. */
const claimUpTo10 = (queue: string, machine: string, startNow: number) =>
  claimQueries(db.schema).claim(db.pool, {
    queue,
    machines: [machine],
    want: 10,
    nodeId: "claim-keys-test",
    leaseMs: 60_000,
    global: null,
    startNow,
    keyedAtMost: 10,
  });

/** A no-op job of `queue` keyed `<prefix>:<k>`, `limit` steps a key at once (1 unless given). */
const keyedJob = (name: string, queue: string, prefix: string, limit?: number) =>
  defineJob({
    name,
    queue,
    args: z.object({ k: z.number(), n: z.number() }),
    concurrency: { key: (a) => `${prefix}:${a.k}`, ...(limit === undefined ? {} : { limit }) },
    perform: () => null,
  });

/** A claimed row's outcome as the executor writes it: done, or a retry of the same step a minute later. */
function outcomeOf(row: ClaimedRow, kind: "done" | "retry"): OutcomeRow {
  const done = { ...doneOutcome(row.id, row.claim_token), concurrency_key: row.concurrency_key, from_step: row.step };
  if (kind === "done") return done;
  return {
    ...done,
    status: "runnable",
    delay_ms: 60_000,
    to_step: row.step,
    outcome: "error",
    error: { message: "x" },
  };
}

describe("a claim and the rows of its keys", () => {
  it("updates them itself, without the per-row trigger, to what the trigger would have made of them", async () => {
    const later = new Date(Date.now() + 3_600_000);
    await client.insertMany([
      // Three of one key: one is claimed, the next two stay queued in order.
      { machine: Keyed, args: { n: 1 }, concurrencyKey: "a" },
      { machine: Keyed, args: { n: 2 }, concurrencyKey: "a" },
      { machine: Keyed, args: { n: 3 }, concurrencyKey: "a", priority: -1, runAt: later },
      // One due now and one due later: the key's next work is the later one.
      { machine: Keyed, args: { n: 4 }, concurrencyKey: "b" },
      { machine: Keyed, args: { n: 5 }, concurrencyKey: "b", runAt: later },
      // A key of limit 2 with three due: two claimed at once.
      { machine: Pair, args: { k: "x", n: 6 } },
      { machine: Pair, args: { k: "x", n: 7 } },
      { machine: Pair, args: { k: "x", n: 8 } },
      // A key whose only work is claimed: left with nothing queued.
      { machine: Keyed, args: { n: 9 }, concurrencyKey: "c" },
      // Unkeyed rows in the same claim.
      { machine: Keyed, args: { n: 10 } },
      { machine: Keyed, args: { n: 11 } },
    ]);
    expectKeysCurrent(await keyRows());

    const [{ rows: claimed }, triggerCalls] = await countingTriggerCalls(claim);
    const byKey = (key: string | null) => claimed.filter((r) => r.concurrency_key === key).length;
    expect([byKey("a"), byKey("b"), byKey("pair:x"), byKey("c"), byKey(null)]).toEqual([1, 1, 2, 1, 2]);
    // Five keyed rows claimed: before, five calls of the row trigger.
    expect(triggerCalls).toBe(0);

    const rows = await keyRows();
    expectKeysCurrent(rows);
    const of = (key: string) => rows.find((r) => r.key === key)!;
    expect(of("a").holders).toHaveLength(1);
    expect(of("pair:x").holders).toHaveLength(2);
    expect(of("pair:x").max_running).toBe(2);
    expect(of("c").run_at).toBeNull();
    expect(of("b").run_at).toEqual(later);
    // The key's best priority among what still waits, whatever its due time.
    expect(of("a").priority).toBe(-1);

    // The group commit: outcomes that leave their key's slot are taken out of the holders by the
    // statement; a retry (back to runnable) still goes through the trigger.
    const keyed = claimed.filter((r) => r.concurrency_key !== null);
    const retried = keyed.find((r) => r.concurrency_key === "pair:x")!;
    const [, commitCalls] = await countingTriggerCalls((conn) =>
      claimQueries(db.schema).completeReleasingKeys(conn, {
        outcomes: keyed.map((r) => outcomeOf(r, r === retried ? "retry" : "done")),
      }),
    );
    expect(commitCalls).toBe(1);
    expectKeysCurrent(await keyRows());
    expect((await keyRows()).every((r) => r.holders.length === 0)).toBe(true);

    // In a transaction that goes on after it, every outcome goes through the trigger.
    const [{ rows: again }] = await countingTriggerCalls(claim);
    const keyedAgain = again.filter((r) => r.concurrency_key !== null);
    expect(keyedAgain.length).toBeGreaterThan(0);
    const [, inTransactionCalls] = await countingTriggerCalls((conn) =>
      claimQueries(db.schema).complete(conn, { outcomes: keyedAgain.map((r) => outcomeOf(r, "done")) }),
    );
    expect(inTransactionCalls).toBe(keyedAgain.length);
    expectKeysCurrent(await keyRows());

    // A node works the queue to the end (the rows claimed above go back when their lease
    // is given up: released here by the reaper's path, through the trigger).
    await db.pool.query(
      `update ${s}.instances set lease_expires_at = now() - interval '1 second' where leased_by = 'claim-keys-test'`,
    );
    await db.pool.query(`update ${s}.instances set run_at = now() where run_at > now()`);
    const worker = db.engine({ queues: { [QUEUE]: 4 }, machines: [Keyed, Pair], reaperInterval: "100ms" });
    await worker.start();
    try {
      await eventually(
        "every instance done",
        async () => (await db.pool.query(`select 1 from ${s}.instances where status <> 'done'`)).rows.length === 0,
        30_000,
      );
    } finally {
      await worker.stop();
    }
    const after = await keyRows();
    expectKeysCurrent(after);
    for (const row of after) expect(row.holders).toEqual([]);
  });

  it("a claim reads each key's next instance, not the key's whole backlog", { timeout: 60_000 }, async () => {
    // The claim finds a free key's next instance by walking instances_key_runnable in the key's
    // order and stopping at the first. Under the generic plan a session keeps, the planner took
    // the checks the walk adds (this queue, the node's machines) for selective, expected it to
    // read the whole key, and read every runnable row of each key and sorted them instead; with
    // index reads priced high it scanned the whole table once per key. Each case makes its plans
    // on a connection of its own: from statistics taken before the backlog was queued, from
    // current ones, and with random_page_cost raised, as a server may be tuned.
    const Deep = defineJob({
      name: "ClaimKeysDeep",
      queue: "claimkeys-deep",
      args: z.object({ n: z.number() }),
      perform: () => null,
    });
    const KEYS = 1000;
    const BACKLOG = 30;
    const CLAIMED = 200;
    /** A claim of CLAIMED rows on a connection whose plans are made now; the rows of instances it read. */
    const claimOnFreshConnection = async (settings?: string) => {
      const conn = await db.pool.connect();
      try {
        await conn.query("begin");
        if (settings) await conn.query(settings);
        const before = await rowsReadSoFar(conn, `${s}.instances`);
        const { rows } = await claimQueries(db.schema).claim(conn, {
          queue: "claimkeys-deep",
          machines: [Deep.name],
          want: CLAIMED,
          nodeId: "claim-keys-test",
          leaseMs: 60_000,
          global: null,
          startNow: CLAIMED,
          keyedAtMost: CLAIMED,
        });
        const read = (await rowsReadSoFar(conn, `${s}.instances`)) - before;
        return { keys: new Set(rows.map((r) => r.concurrency_key)).size, read };
      } finally {
        await conn.query("rollback");
        // Destroyed, not returned to the pool: its plans must not serve the next case.
        conn.release(true);
      }
    };

    await db.pool.query(`analyze ${s}.instances`);
    // In SQL, the key trigger keeping the keys' rows: 30,000 rows through insertMany take seconds.
    await db.pool.query(
      `insert into ${s}.instances (machine, step, state, status, queue, concurrency_key)
       select $1, 'perform', jsonb_build_object('n', g), 'runnable', 'claimkeys-deep', 'deep:' || (g % $2)
       from generate_series(1, $3) g`,
      [Deep.name, KEYS, KEYS * BACKLOG],
    );
    const cases = { staleStatistics: await claimOnFreshConnection() };
    await db.pool.query(`analyze ${s}.instances`);
    Object.assign(cases, {
      currentStatistics: await claimOnFreshConnection(),
      indexReadsPricedHigh: await claimOnFreshConnection("set local random_page_cost = 400"),
    });
    // Each key's next instance, its row locked and claimed, the key's next work looked up: 6 rows
    // per key, 1,200 in every case. Before: 7,002 with current statistics (each key's backlog read
    // and sorted), and 6,060,602 with index reads priced high (the table scanned for each key).
    const offending = Object.entries(cases).filter(([, { keys, read }]) => keys !== CLAIMED || read > 10 * CLAIMED);
    expect(offending).toEqual([]);
    await db.pool.query(`delete from ${s}.instances where queue = 'claimkeys-deep'`);
    await db.pool.query(`delete from ${s}.concurrency_keys where key like 'deep:%'`);
  });

  it("a group commit of unkeyed outcomes does not lock the keys' table", async () => {
    const queue = "claimkeys-plain";
    const Plain = defineJob({ name: "ClaimKeysPlain", queue, args: z.object({ n: z.number() }), perform: () => null });
    await client.insertMany([1, 2, 3].map((n) => ({ machine: Plain, args: { n } })));
    const { rows: claimed } = await claimUpTo10(queue, Plain.name, 3);
    expect(claimed).toHaveLength(3);
    // A migration's CREATE INDEX, say: it waits for every statement that names the table, and
    // every later one waits behind it. Before, every group commit named it.
    const side = await db.pool.connect();
    try {
      await side.query("begin");
      await side.query(`lock table ${s}.concurrency_keys in access exclusive mode`);
      const completer = new Completer(db.pool, claimQueries(db.schema));
      const committed = Promise.all(claimed.map((row) => completer.submit(outcomeOf(row, "done"))));
      let settled = false;
      void committed.finally(() => (settled = true));
      await eventually("the group commit done, or waiting for the keys' table", async () => {
        if (settled) return true;
        const { rows } = await db.pool.query(
          `select 1 from pg_locks l join pg_class c on c.oid = l.relation
           where not l.granted and c.relname = 'concurrency_keys' and c.relnamespace = $1::regnamespace`,
          [db.schema],
        );
        return rows.length > 0;
      });
      expect(settled).toBe(true);
      expect(await committed).toEqual([true, true, true]);
    } finally {
      await side.query("rollback");
      side.release();
    }
  });

  it("a group commit gives a key back in place: its row's update enters no index", async () => {
    // concurrency_keys_claim does not read `holders` (migration 36), so taking a finished step out
    // of its key's holders changes no indexed column: a HOT update, where it wrote a new entry into
    // both of the table's indexes while the index held only keys with a free slot.
    const queue = "claimkeys-release";
    const Released = keyedJob("ClaimKeysReleased", queue, "release");
    // Two a key: the second keeps the key's work (run_at) while the first runs and after.
    await client.insertMany([1, 2, 3].flatMap((k) => [1, 2].map((n) => ({ machine: Released, args: { k, n } }))));
    const { rows: claimed } = await claimUpTo10(queue, Released.name, 10);
    expect(claimed.map((r) => r.concurrency_key).sort()).toEqual(["release:1", "release:2", "release:3"]);
    const conn = await db.pool.connect();
    try {
      await conn.query("begin");
      const updates = async () =>
        (
          await conn.query<{ updated: number; hot: number }>(
            `select n_tup_upd::int as updated, n_tup_hot_upd::int as hot from pg_stat_xact_user_tables
             where relid = $1::regclass`,
            [`${s}.concurrency_keys`],
          )
        ).rows[0]!;
      const before = await updates();
      const { rows: won } = await claimQueries(db.schema).completeReleasingKeys(conn, {
        outcomes: claimed.map((r) => outcomeOf(r, "done")),
      });
      expect(won).toHaveLength(3);
      const after = await updates();
      expect({ updated: after.updated - before.updated, hot: after.hot - before.hot }).toEqual({ updated: 3, hot: 3 });
      await conn.query("commit");
    } catch (error) {
      await conn.query("rollback");
      throw error;
    } finally {
      conn.release();
    }
    const keys = await keyRows();
    expectKeysCurrent(keys);
    expect(keys.filter((k) => k.key.startsWith("release:")).map((k) => k.holders)).toEqual([[], [], []]);
  });

  it("two group commits written at once over the same keys: every outcome commits, every key is given back", async () => {
    // The group commit writes a full batch beside the one in flight (runtime/completer.ts): both
    // lock their keys before any row, in one global order, so sharing every key they wait on each
    // other's keys at most, never in a cycle.
    const queue = "claimkeys-two-commits";
    const Shared = keyedJob("ClaimKeysShared", queue, "shared", 11);
    const jobs = 1_100;
    await client.insertMany(Array.from({ length: jobs }, (_, n) => ({ machine: Shared, args: { k: n % 100, n } })));
    const { rows: claimed } = await claimQueries(db.schema).claim(db.pool, {
      queue,
      machines: [Shared.name],
      want: jobs,
      nodeId: "claim-keys-test",
      leaseMs: 60_000,
      global: null,
      startNow: jobs,
      keyedAtMost: jobs,
    });
    expect(claimed).toHaveLength(jobs);
    const queries = claimQueries(db.schema);
    let writing = 0;
    let mostAtOnce = 0;
    const completeReleasingKeys: typeof queries.completeReleasingKeys = Object.assign(
      async (...args: Parameters<typeof queries.completeReleasingKeys>) => {
        mostAtOnce = Math.max(mostAtOnce, ++writing);
        try {
          return await queries.completeReleasingKeys(...args);
        } finally {
          writing--;
        }
      },
      { text: queries.completeReleasingKeys.text },
    );
    const completer = new Completer(db.pool, { ...queries, completeReleasingKeys });
    // Round robin over the keys: every batch of the 1,100 outcomes holds all 100 of them.
    const byKey = [...claimed].sort((a, b) => a.id.localeCompare(b.id, "en", { numeric: true }));
    const won = await Promise.all(byKey.map((row) => completer.submit(outcomeOf(row, "done"))));
    expect(won.every(Boolean)).toBe(true);
    expect(mostAtOnce).toBe(2);
    const { rows } = await db.pool.query<{ status: string; n: number }>(
      `select status, count(*)::int as n from ${s}.instances where queue = $1 group by 1`,
      [queue],
    );
    expect(rows).toEqual([{ status: "done", n: jobs }]);
    const keys = await keyRows();
    expectKeysCurrent(keys);
    expect(keys.filter((k) => k.key.startsWith("shared:") && k.holders.length > 0)).toEqual([]);
  });
});
