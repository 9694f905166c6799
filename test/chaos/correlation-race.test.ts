/**
 * RELIABILITY.md scenario 13 (PR size): two processes, released together by a
 * barrier, insert the same correlation keys over several connections each.
 * SPEC: a correlation key names at most one live instance, "also when two nodes
 * race"; every insert returns { id, inserted } and never a unique violation.
 */
import { describe, expect, it } from "vitest";
import { useTestDatabase } from "../support/db.js";
import { forkChild, useChildren, type ChildMessage } from "../support/worker-process.js";

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
async function race(name: string, perProcess: string[][][], env: Record<string, string>): Promise<Result[]> {
  const children = perProcess.map((rounds, i) =>
    forkChild(new URL("./fixtures/inserter.ts", import.meta.url), {
      name: `gd-${name}-${i}`,
      env: { DATABASE_URL: db.url, GD_SCHEMA: db.schema, GD_KEYS: JSON.stringify(rounds), GD_LANES: String(LANES), ...env },
    }),
  );
  for (let round = 0; round < perProcess[0]!.length; round++) {
    await Promise.all(children.map((c) => c.waitFor(`ready:${round}`, 30_000)));
    for (const child of children) child.send({ type: `go:${round}` });
  }
  const results = (await Promise.all(children.map((c) => c.waitFor("result", 30_000)))) as Result[];
  const exits = await Promise.all(children.map((c) => c.exited));
  expect(exits).toEqual(children.map(() => ({ code: 0, signal: null })));
  return results;
}

async function checkOutcome(prefix: string, keys: string[], results: Result[], callsPerProcess: number) {
  // No error of any kind reached a caller (in particular no 23505 unique violation).
  const errors = new Map<string, number>();
  for (const e of results.flatMap((r) => r.errors)) errors.set(`${String(e.code)}: ${e.message}`, (errors.get(`${String(e.code)}: ${e.message}`) ?? 0) + 1);
  expect(Object.fromEntries(errors), "errors seen by callers (message: number of keys)").toEqual({});
  // Every call returned an id.
  for (const result of results) {
    expect(result.calls).toHaveLength(callsPerProcess);
    for (const call of result.calls) expect(call.id).toMatch(/^[1-9][0-9]*$/);
  }
  // Every caller, in either process, saw the same id for a key; exactly one call inserted it.
  const byKey = new Map<string, { ids: Set<string>; inserted: number }>();
  for (const call of results.flatMap((r) => r.calls)) {
    const entry = byKey.get(call.key) ?? { ids: new Set(), inserted: 0 };
    entry.ids.add(call.id);
    if (call.inserted) entry.inserted++;
    byKey.set(call.key, entry);
  }
  expect([...byKey.keys()].sort()).toEqual([...keys].sort());
  const disagreements = [...byKey].filter(([, e]) => e.ids.size !== 1 || e.inserted !== 1).map(([key, e]) => ({ key, ids: [...e.ids], inserted: e.inserted }));
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

const ROUNDS = 4;
const keysOf = (prefix: string, round: number) => Array.from({ length: KEYS }, (_, i) => `${prefix}${round}:${String(i).padStart(3, "0")}`);

describe("correlation keys raced from two processes", () => {
  it("insert(): 2 processes × 8 connections, every key twice in each, give one instance per key and one id to everyone", async () => {
    // Same order in both processes, each key twice in a row: four inserts of a key are in flight at once.
    const rounds = Array.from({ length: ROUNDS }, (_, r) => keysOf("race:", r).flatMap((k) => [k, k]));
    const results = await race("ins", [rounds, rounds], { GD_MODE: "insert" });
    const keys = Array.from({ length: ROUNDS }, (_, r) => keysOf("race:", r)).flat();
    await checkOutcome("race:", keys, results, ROUNDS * KEYS * 2);
    console.log(`correlation race (insert): ${ROUNDS} rounds of ${KEYS} keys; ms per round ${results.map((r) => r.times.join("/")).join(", ")}`);
  });

  it("insertMany(): overlapping batches in opposite key orders from 2 processes", async () => {
    // Batches of 20: the same 20 keys in both processes at the same time, in opposite orders.
    const forward = Array.from({ length: ROUNDS }, (_, r) => keysOf("batch:", r));
    const backward = forward.map((keys) => Array.from({ length: KEYS / 20 }, (_, b) => keys.slice(b * 20, b * 20 + 20).reverse()).flat());
    const results = await race("many", [forward, backward], { GD_MODE: "insertMany", GD_BATCH: "20" });
    await checkOutcome("batch:", forward.flat(), results, ROUNDS * KEYS);
    console.log(`correlation race (insertMany): ${ROUNDS} rounds of ${KEYS} keys; ms per round ${results.map((r) => r.times.join("/")).join(", ")}`);
  });
});
