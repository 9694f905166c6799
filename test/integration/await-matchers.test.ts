// The two await matchers agree: engine.signal matches in TypeScript (matchSpec, tryResume), signal()
// from SQL in plpgsql (try_resume, match_tree). Each case runs through both against real rows.
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine } from "../../src/index.js";
import type { AwaitSpec } from "../../src/outcome.js";
import { matchSpec, normalizeSpec } from "../../src/runtime/await-spec.js";
import { tryResume } from "../../src/runtime/signals.js";
import { signalQueries } from "../../src/sql/signals.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = db.schema;

// Never claimed (no engine runs its queue): its rows are parked by hand for each case.
const Idle = defineMachine({
  name: "Idle",
  queue: "idle",
  state: z.object({}),
  steps: { start: (ctx) => ctx.done() },
});
const engine = db.engine({ machines: [Idle] });
await engine.start();

let client: pg.PoolClient;
beforeAll(async () => {
  client = await db.pool.connect();
});
afterAll(() => client.release());

/** An instance awaiting `spec` with `mailbox` delivered (payload: the signal's position), not yet matched. */
async function parked(spec: AwaitSpec, mailbox: readonly string[]): Promise<string> {
  const { id } = await engine.insert(Idle, { state: {} });
  await client.query(`update ${s}.instances set status = 'awaiting', await_spec = $2 where id = $1`, [
    id,
    JSON.stringify(normalizeSpec(spec, "case")),
  ]);
  await client.query(
    `insert into ${s}.signals (instance_id, event, payload)
     select $1, e, to_jsonb(i - 1) from unnest($2::text[]) with ordinality m(e, i) order by i`,
    [id, mailbox],
  );
  return id;
}

/** The positions in the mailbox that resumed the instance (its ctx.awaited), or null if it still waits. */
async function resumedWith(id: string): Promise<number[] | null> {
  const { rows } = await client.query<{ status: string; awaited: { payload: number }[] | null }>(
    `select status, awaited from ${s}.instances where id = $1`,
    [id],
  );
  const consumed = await client.query<{ n: number }>(
    `select count(*)::int as n from ${s}.signals where instance_id = $1 and consumed_at is not null`,
    [id],
  );
  if (rows[0]!.status === "awaiting") {
    expect(consumed.rows[0]!.n).toBe(0);
    return null;
  }
  const positions = rows[0]!.awaited!.map((signal) => signal.payload);
  expect(consumed.rows[0]!.n).toBe(positions.length);
  return positions;
}

async function throughTypeScript(spec: AwaitSpec, mailbox: readonly string[]): Promise<number[] | null> {
  const id = await parked(spec, mailbox);
  await tryResume(client, signalQueries(s), id, normalizeSpec(spec, "case"), null);
  return resumedWith(id);
}

async function throughSql(spec: AwaitSpec, mailbox: readonly string[]): Promise<number[] | null> {
  const id = await parked(spec, mailbox);
  await client.query(`select ${s}.try_resume($1, await_spec, 'gen_durable_test') from ${s}.instances where id = $1`, [
    id,
  ]);
  return resumedWith(id);
}

/** Positions matchSpec picks from `mailbox`, without a database. */
function inMemory(spec: AwaitSpec, mailbox: readonly string[]): number[] | null {
  const matched = matchSpec(
    normalizeSpec(spec, "case"),
    mailbox.map((event, i) => ({ event, i })),
  );
  return matched && matched.map((signal) => signal.i);
}

const approval: AwaitSpec = { any: [{ event: "approve", count: 2 }, "reject"] };
// [spec, mailbox in arrival order, positions consumed (null: not satisfied)]
const cases: [string, AwaitSpec, string[], number[] | null][] = [
  ["one: nothing yet", "a", ["b"], null],
  ["one: the oldest", "a", ["b", "a", "a"], [1]],
  ["any: the oldest of either", { any: ["a", "b"] }, ["c", "b", "a"], [1]],
  ["all: the oldest of each", { all: ["a", "b"] }, ["b", "b", "a"], [0, 2]],
  ["all: one missing", { all: ["a", "b"] }, ["a", "a"], null],
  ["pack: the oldest n", { event: "a", count: 2 }, ["a", "b", "a", "a"], [0, 2]],
  ["pack: too few", { event: "a", count: 3 }, ["a", "a"], null],
  ["approval: one approval", approval, ["approve"], null],
  ["approval: two approvals", approval, ["approve", "approve"], [0, 1]],
  ["approval: the rejection completes first", approval, ["approve", "reject", "approve"], [1]],
  ["approval: the approvals complete first", approval, ["approve", "approve", "reject"], [0, 1]],
  ["approval: one of two rejections", approval, ["reject", "reject"], [0]],
  ["approval: others interleaved", approval, ["other", "approve", "other", "approve"], [1, 3]],
  [
    "set of a pack and an alternative",
    { all: [{ event: "a", count: 2 }, { any: ["b", "c"] }] },
    ["a", "c", "b", "a", "a"],
    [0, 1, 3],
  ],
  [
    "two packs of one event need both counts",
    {
      all: [
        { event: "a", count: 1 },
        { event: "a", count: 2 },
      ],
    },
    ["a", "a"],
    null,
  ],
  [
    "two packs of one event, satisfied",
    {
      all: [
        { event: "a", count: 1 },
        { event: "a", count: 2 },
      ],
    },
    ["a", "a", "a"],
    [0, 1, 2],
  ],
  // Members take in turn: the alternative takes the oldest "a", leaving none for the second member.
  ["a set's members take in turn", { all: [{ any: ["a", "b"] }, { event: "a", count: 1 }] }, ["a", "b"], null],
  ["a set's members take in turn, satisfied", { all: [{ any: ["a", "b"] }, "a"] }, ["a", "b", "a"], [0, 2]],
  // Alternatives completed at the same signal: the first listed wins.
  ["a tie goes to the first alternative", { any: [{ all: ["a", "b"] }, { event: "b", count: 1 }] }, ["a", "b"], [0, 1]],
  [
    "a tie goes to the first alternative (reversed)",
    { any: [{ event: "b", count: 1 }, { all: ["a", "b"] }] },
    ["a", "b"],
    [1],
  ],
  [
    "alternatives inside a set",
    { all: [{ any: [{ event: "a", count: 2 }, "b"] }, { any: ["a", "c"] }] },
    ["a", "b", "a"],
    [0, 1],
  ],
  [
    "alternatives inside a set, the pack first",
    { all: [{ any: [{ event: "a", count: 2 }, "b"] }, { any: ["a", "c"] }] },
    ["a", "a", "c"],
    [0, 1, 2],
  ],
  [
    "nested three deep",
    { any: [{ all: [{ any: ["a", "b"] }, { event: "c", count: 2 }] }, "d"] },
    ["c", "b", "c", "d"],
    [0, 1, 2],
  ],
];

describe("TypeScript and SQL await matchers", () => {
  it.each(cases)("%s", async (_, spec, mailbox, expected) => {
    expect(inMemory(spec, mailbox)).toEqual(expected);
    expect(await throughTypeScript(spec, mailbox)).toEqual(expected);
    expect(await throughSql(spec, mailbox)).toEqual(expected);
  });

  it("agree on 300 generated specs and mailboxes", async () => {
    const random = mulberry32(20261205);
    const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)]!;
    const node = (depth: number): AwaitSpec => {
      if (depth >= 3 || random() < 0.4) {
        const count = 1 + Math.floor(random() * 3);
        const event = pick(["a", "b", "c"]);
        return count === 1 && random() < 0.5 ? event : { event, count };
      }
      const children = Array.from({ length: 1 + Math.floor(random() * 3) }, () => node(depth + 1));
      return random() < 0.5 ? { all: children } : { any: children };
    };
    let satisfied = 0;
    for (let n = 0; n < 300; n++) {
      const spec = node(0);
      const mailbox = Array.from({ length: Math.floor(random() * 9) }, () => pick(["a", "b", "c", "d"]));
      const expected = inMemory(spec, mailbox);
      if (expected) satisfied++;
      expect(await throughSql(spec, mailbox), JSON.stringify({ spec, mailbox })).toEqual(expected);
    }
    // The generator exercises both outcomes.
    expect(satisfied).toBeGreaterThan(50);
    expect(satisfied).toBeLessThan(250);
  });
});

function mulberry32(seed: number): () => number {
  return () => {
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), seed | 1);
    t = (t + Math.imul(t ^ (t >>> 7), t | 61)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
