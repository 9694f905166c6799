// claim_rows takes one of two paths: a queue with no global limit and no key that has a free slot
// and due work is claimed in one statement; any other in three (choose and lock, claim, bring the
// keys' rows up to date). Both must claim the same rows in the same order, charge the same ones
// their attempt, and honour a paused queue. Called here as a node calls it, with no engine running
// these queues.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob } from "../../src/index.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const Job = defineJob({
  name: "ClaimPathJob",
  queue: "unused",
  args: z.object({ n: z.number() }),
  perform: () => null,
});
const client = db.engine();
await client.start();

interface Claimed {
  id: string;
  attempt: number;
  claimed_ahead: boolean;
  concurrency_key: string | null;
}

/** claim_rows(queue, machines, want, node, lease ms, global limit, start now, keyed at most). */
async function claim(queue: string, want: number, startNow: number, global: number | null): Promise<Claimed[]> {
  const { rows } = await db.pool.query<Claimed>(
    `select id, attempt, claimed_ahead, concurrency_key
     from ${s}.claim_rows($1, array['ClaimPathJob'], $2, 'claim-paths', 30000, $3, $4, $2)`,
    [queue, want, global, startNow],
  );
  return rows;
}

/** The same rows in `queue`: priorities 2, 0, 1 in turn, some due a little in the past, one in the future. */
async function fill(queue: string, extra: Array<{ concurrencyKey: string }> = []): Promise<string[]> {
  const past = new Date(Date.now() - 60_000);
  const items = Array.from({ length: 9 }, (_, n) => ({
    machine: Job,
    args: { n },
    queue,
    priority: [2, 0, 1][n % 3]!,
    ...(n === 4 ? { runAt: new Date(Date.now() + 3_600_000) } : n % 2 === 0 ? { runAt: past } : {}),
  }));
  const inserted = await client.insertMany([
    ...items,
    ...extra.map((e, n) => ({ machine: Job, args: { n: 100 + n }, queue, concurrencyKey: e.concurrencyKey })),
  ]);
  return inserted.map((r) => r.id);
}

/** Each claimed row as its place among the queue's inserted rows, its attempt and whether it waits. */
function shape(rows: Claimed[], ids: string[]) {
  return rows
    .map((r) => ({ n: ids.indexOf(r.id), attempt: r.attempt, ahead: r.claimed_ahead, key: r.concurrency_key }))
    .sort((a, b) => Number(a.ahead) - Number(b.ahead) || a.n - b.n);
}

describe("claim_rows' two paths", () => {
  it("claim the same unkeyed rows in the same order, charging the same ones", async () => {
    const oneStatement = await fill("paths-one");
    const threeStatements = await fill("paths-three");
    // A global limit far above what is running takes the three statements.
    const a = await claim("paths-one", 6, 2, null);
    const b = await claim("paths-three", 6, 2, 1_000_000);
    expect(shape(a, oneStatement)).toEqual(shape(b, threeStatements));
    // Priority first, then due time, then id: 1 and 7 (priority 0), 2 and 8 (1, due a minute ago)
    // before 5 (1, due now), then 0 (2, a minute ago); 6 and 3 wait, and 4 is due in an hour.
    const { rows } = await db.pool.query<{ id: string }>(
      `select id from ${s}.instances where queue = 'paths-one' and status = 'runnable' order by id`,
    );
    expect(rows.map((r) => oneStatement.indexOf(r.id))).toEqual([3, 4, 6]);
    expect(a.filter((r) => !r.claimed_ahead).map((r) => [oneStatement.indexOf(r.id), r.attempt])).toEqual([
      [1, 1],
      [7, 1],
    ]);
    expect(a.filter((r) => r.claimed_ahead).every((r) => r.attempt === 0)).toBe(true);
  });

  it("claims nothing from a paused queue on either path", async () => {
    await fill("paths-paused");
    await client.pauseQueue("paths-paused");
    expect(await claim("paths-paused", 5, 5, null)).toEqual([]);
    expect(await claim("paths-paused", 5, 5, 1_000_000)).toEqual([]);
    await client.resumeQueue("paths-paused");
    expect(await claim("paths-paused", 5, 5, null)).toHaveLength(5);
  });

  it("takes keyed work when a key has a free slot, and holds the key", async () => {
    const ids = await fill("paths-keyed", [{ concurrencyKey: "paths-k" }]);
    const rows = await claim("paths-keyed", 20, 20, null);
    expect(rows.map((r) => ids.indexOf(r.id)).sort((x, y) => x - y)).toEqual([0, 1, 2, 3, 5, 6, 7, 8, 9]);
    expect(rows.find((r) => r.concurrency_key === "paths-k")).toBeDefined();
    const { rows: key } = await db.pool.query<{ holders: string[] }>(
      `select holders::text[] as holders from ${s}.concurrency_keys where key = 'paths-k'`,
    );
    expect(key[0]!.holders).toEqual([ids[9]]);
  });
});
