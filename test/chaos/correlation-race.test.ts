/**
 * Correlation keys raced across processes (PR size): two processes, released together by a
 * barrier, insert the same correlation keys over several connections each.
 * The contract: a correlation key names at most one live instance, also when two
 * nodes race; every insert returns { id, inserted } and never a unique violation.
 */
import { describe, expect, it } from "vitest";
import { eventually, useTestDatabase } from "../support/db.js";
import { forkChild, useChildren, type ChildMessage } from "../support/worker-process.js";
import { Keyed } from "./fixtures/machines.js";

useChildren();
const db = await useTestDatabase(import.meta.url);

const KEYS = 200;
const LANES = 8;

interface Result extends ChildMessage {
  calls: Array<{ key: string; id: string; inserted: boolean }>;
  errors: Array<{ key: string; code: unknown; message: string }>;
  times: number[];
}

/**
 * Forks one inserter per process, each given its own key order for every round;
 * each round waits until all are connected and releases them at once (barrier).
 * Several rounds of fresh keys, because one overlap of two processes is a matter of milliseconds.
 */
async function race(
  name: string,
  perProcess: string[][][],
  env: Record<string, string>,
  /** Optional: runs before each round's release, and after it (while the children insert). */
  hooks: { beforeGo?: () => Promise<void>; afterGo?: (names: string[]) => Promise<void> } = {},
): Promise<Result[]> {
  const children = perProcess.map((rounds, i) =>
    forkChild(new URL("./fixtures/inserter.ts", import.meta.url), {
      name: `gd-${name}-${i}`,
      env: {
        DATABASE_URL: db.url,
        GD_SCHEMA: db.schema,
        GD_KEYS: JSON.stringify(rounds),
        GD_LANES: String(LANES),
        ...env,
      },
    }),
  );
  for (let round = 0; round < perProcess[0]!.length; round++) {
    await Promise.all(children.map((c) => c.waitFor(`ready:${round}`, 30_000)));
    await hooks.beforeGo?.();
    for (const child of children) child.send({ type: `go:${round}` });
    await hooks.afterGo?.(children.map((c) => c.name));
  }
  const results = (await Promise.all(children.map((c) => c.waitFor("result", 30_000)))) as Result[];
  const exits = await Promise.all(children.map((c) => c.exited));
  expect(exits).toEqual(children.map(() => ({ code: 0, signal: null })));
  return results;
}

async function checkOutcome(
  prefix: string,
  keys: string[],
  results: Result[],
  callsPerProcess: number,
  others: Result["calls"] = [],
) {
  // No error of any kind reached a caller (in particular no 23505 unique violation).
  const errors = new Map<string, number>();
  for (const e of results.flatMap((r) => r.errors))
    errors.set(`${String(e.code)}: ${e.message}`, (errors.get(`${String(e.code)}: ${e.message}`) ?? 0) + 1);
  expect(Object.fromEntries(errors), "errors seen by callers (message: number of keys)").toEqual({});
  // Every call returned an id.
  for (const result of results) {
    expect(result.calls).toHaveLength(callsPerProcess);
    for (const call of result.calls) expect(call.id).toMatch(/^[1-9][0-9]*$/);
  }
  // Every caller, in either process, saw the same id for a key; exactly one call inserted it.
  const byKey = new Map<string, { ids: Set<string>; inserted: number }>();
  for (const call of [...results.flatMap((r) => r.calls), ...others]) {
    const entry = byKey.get(call.key) ?? { ids: new Set(), inserted: 0 };
    entry.ids.add(call.id);
    if (call.inserted) entry.inserted++;
    byKey.set(call.key, entry);
  }
  expect([...byKey.keys()].sort()).toEqual([...keys].sort());
  const disagreements = [...byKey]
    .filter(([, e]) => e.ids.size !== 1 || e.inserted !== 1)
    .map(([key, e]) => ({ key, ids: [...e.ids], inserted: e.inserted }));
  expect(disagreements).toEqual([]);
  // The database agrees: exactly one live instance per key, and it is the id the callers got.
  const { rows } = await db.pool.query<{ correlation_key: string; ids: string[] }>(
    `select correlation_key, array_agg(id::text) as ids from "${db.schema}".instances
     where correlation_key like $1 || '%' group by 1`,
    [prefix],
  );
  expect(rows).toHaveLength(keys.length);
  for (const row of rows) expect(row.ids).toEqual([...byKey.get(row.correlation_key)!.ids]);
}

const ROUNDS = 2;
const keysOf = (prefix: string, round: number) =>
  Array.from({ length: KEYS }, (_, i) => `${prefix}${round}:${String(i).padStart(3, "0")}`);

describe("correlation keys raced from two processes", () => {
  it("insert(): 2 processes × 8 connections, every key twice in each, give one instance per key and one id to everyone", async () => {
    // Same order in both processes, each key twice in a row: four inserts of a key are in flight at once.
    const rounds = Array.from({ length: ROUNDS }, (_, r) => keysOf("race:", r).flatMap((k) => [k, k]));
    const results = await race("ins", [rounds, rounds], { GD_MODE: "insert" });
    const keys = Array.from({ length: ROUNDS }, (_, r) => keysOf("race:", r)).flat();
    await checkOutcome("race:", keys, results, ROUNDS * KEYS * 2);
    console.log(
      `correlation race (insert): ${ROUNDS} rounds of ${KEYS} keys; ms per round ${results.map((r) => r.times.join("/")).join(", ")}`,
    );
  });

  it("insertMany(): two bulk inserts of the same keys in opposite orders, running at the same time", async () => {
    // Process 0 inserts batch:000..199 in one insertMany, process 1 the same keys backwards.
    // To make them overlap on every run (not only when the scheduler happens to
    // line them up), the test holds batch:100 in an open transaction of its own
    // (transactional enqueue) until both statements are blocked, then commits:
    // each has by then inserted (uncommitted) the half of the keys the other still needs.
    const keys = Array.from({ length: KEYS }, (_, i) => `batch:${String(i).padStart(3, "0")}`);
    const middle = keys[KEYS / 2]!;
    const client = db.engine({ poolSize: 3 });
    await client.start();
    const holder = await db.pool.connect();
    let held: { id: string; inserted: boolean } | undefined;
    try {
      const hooks = {
        beforeGo: async () => {
          await holder.query("begin");
          [held] = await client.insertMany([{ machine: Keyed, args: { key: middle }, correlationKey: middle }], {
            client: holder,
          });
        },
        // Both bulk statements are running; wait until neither can go on (both wait on a lock), then let go.
        afterGo: async (names: string[]) => {
          await eventually(
            "both bulk inserts blocked on a lock",
            async () => {
              const { rows } = await db.pool.query<{ n: number }>(
                `select count(*)::int as n from pg_stat_activity where application_name = any($1) and wait_event_type = 'Lock'`,
                [names],
              );
              return rows[0]!.n === 2;
            },
            20_000,
          );
          await holder.query("commit");
        },
      };
      const results = await race(
        "many",
        [[keys], [[...keys].reverse()]],
        { GD_MODE: "insertMany", GD_BATCH: String(KEYS) },
        hooks,
      );
      expect(held?.inserted).toBe(true);
      await checkOutcome("batch:", keys, results, KEYS, [{ key: middle, ...held! }]);
      console.log(`correlation race (insertMany): ${results.map((r) => `${r.times.join("/")} ms`).join(", ")}`);
    } finally {
      await holder.query("rollback").catch(() => {});
      holder.release();
    }
  });
});
