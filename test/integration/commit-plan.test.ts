// The group commit finds each row by its primary key, whatever the statistics say. In a deep
// queue, ANALYZE sees almost no running rows; with the claim's fence (token, running) repeated in
// the UPDATE, the planner then joined each outcome to a walk of the partial index instances_lease:
// every row of a batch read every other, quadratic in the batch (500 outcomes filtered 124,750
// rows and took 66 ms instead of 9). Counted here in rows, not timed.
//
// The same holds for every statement fenced on a claim (id, token, running): under the generic plan
// a prepared statement settles on, statistics that saw no running row made the lock of a group
// commit's rows read every running row of every node through instances_lease, once per commit.
import { describe, expect, it } from "vitest";
import { claimQueries } from "../../src/sql/claims.js";
import type { QueryConfig, QueryResultRow } from "pg";
import type { Queryable, Statement } from "../../src/sql/query.js";
import { sqlApiQueries } from "../../src/sql/sql-api.js";
import { versionQueries } from "../../src/sql/versions.js";
import { rowsReadSoFar, useTestDatabase } from "../support/db.js";
import { doneOutcome } from "../support/outcomes.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const QUEUED = 200_000;
const BATCH = 500;

interface PlanNode {
  "Node Type": string;
  "Relation Name"?: string;
  "Actual Rows"?: number;
  "Rows Removed by Join Filter"?: number;
  "Rows Removed by Filter"?: number;
  "Actual Loops"?: number;
  Plans?: PlanNode[];
}

function rowsFiltered(node: PlanNode): number {
  const own = (node["Rows Removed by Join Filter"] ?? 0) + (node["Rows Removed by Filter"] ?? 0);
  return own + (node.Plans ?? []).reduce((sum, child) => sum + rowsFiltered(child), 0);
}

interface Sent {
  text: string;
  values: unknown[];
}

/** What a statement sends for `args`: its text and the values it binds, in $n order. */
async function sent<A>(statement: Statement<A, QueryResultRow>, args: A): Promise<Sent> {
  let config: QueryConfig | undefined;
  const recorder: Queryable = {
    query: (c) => {
      config = c;
      return Promise.resolve({ rows: [] } as never);
    },
  };
  await statement(recorder, args);
  return { text: config!.text, values: config!.values ?? [] };
}

/** A bound value as a SQL literal (EXECUTE under EXPLAIN takes no parameters): ids, numbers, JSON. */
function literal(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "number") return String(value);
  if (Array.isArray(value)) return `'{${value.map(String).join(",")}}'`;
  return `'${String(value).replaceAll("'", "''")}'`;
}

/** Rows the plan read from instances: those its scans returned and those they filtered out. */
function instanceRowsRead(node: PlanNode): number {
  const loops = node["Actual Loops"] ?? 1;
  const own =
    node["Relation Name"] === "instances" && node["Node Type"].includes("Scan")
      ? ((node["Actual Rows"] ?? 0) + (node["Rows Removed by Filter"] ?? 0)) * loops
      : 0;
  return own + (node.Plans ?? []).reduce((sum, child) => sum + instanceRowsRead(child), 0);
}

describe("the group commit's plan", () => {
  it("finds each row of a batch by its primary key in a deep queue", { timeout: 60_000 }, async () => {
    await db.pool.query(
      `insert into ${s}.instances (id, machine, step, state, status, queue)
       select g, 'M', 'start', '{}', 'runnable', 'q' from generate_series(1, ${QUEUED}) g`,
    );
    await db.pool.query(`analyze ${s}.instances`);
    // A batch claimed after the statistics were taken, as on a busy node.
    await db.pool.query(
      `update ${s}.instances set status = 'running', claim_token = 1, lease_expires_at = now() + interval '1 hour'
       where id <= ${BATCH}`,
    );
    const outcomes = Array.from({ length: BATCH }, (_, i) => doneOutcome(String(i + 1)));
    const complete = claimQueries(db.schema).complete;
    const client = await db.pool.connect();
    try {
      await client.query("begin");
      const { rows } = await client.query<{ "QUERY PLAN": Array<{ Plan: PlanNode }> }>(
        `explain (analyze, format json) ${complete.text}`,
        [JSON.stringify(outcomes)],
      );
      const plan = rows[0]!["QUERY PLAN"][0]!.Plan;
      // Each outcome may drop a row version or two; one walk of the batch per outcome is 500 × 250.
      expect(rowsFiltered(plan)).toBeLessThan(4 * BATCH);
      const { rows: done } = await client.query(`select count(*)::int as n from ${s}.instances where status = 'done'`);
      expect(done).toEqual([{ n: BATCH }]);
    } finally {
      await client.query("rollback");
      client.release();
    }
  });

  it(
    "statements fenced on a claim read only their own rows, however many other rows are running",
    { timeout: 60_000 },
    async () => {
      const OTHERS = 5_000;
      await db.pool.query(`truncate ${s}.instances, ${s}.transitions`);
      await db.pool.query(
        `insert into ${s}.instances (id, machine, step, state, status, queue)
       select g, 'M', 'start', '{}', 'runnable', 'q' from generate_series(1, 20000) g`,
      );
      await db.pool.query(`analyze ${s}.instances`);
      // Ours (ids 1-3, token 1) and other nodes' running rows, all claimed after the statistics were taken.
      await db.pool.query(
        `update ${s}.instances set status = 'running', claim_token = case when id <= 3 then 1 else 7 end,
         claimed_ahead = id = 2, lease_expires_at = now() + interval '1 hour', leased_by = 'n'
       where id <= ${OTHERS + 3}`,
      );
      const claims = ["1", "2", "3"].map((id) => ({ id, token: "1" }));
      const q = claimQueries(db.schema);
      const outcomes = claims.map((c) => doneOutcome(c.id));
      const claim = { id: "1", token: "1" };
      const fenced: Record<string, Sent> = {
        complete: await sent(q.complete, { outcomes }),
        completeReleasingKeys: await sent(q.completeReleasingKeys, { outcomes }),
        renew: await sent(q.renew, { claims, leaseMs: 30_000 }),
        start: await sent(q.start, { claims }),
        release: await sent(q.release, { claims }),
        committedBy: await sent(q.committedBy, { claims }),
        lockClaimed: await sent(q.lockClaimed, claim),
        acceptState: await sent(sqlApiQueries(db.schema).acceptState, { ...claim, state: "{}", version: 1 }),
        upcast: await sent(versionQueries(db.schema).upcast, { ...claim, state: "{}", version: 2 }),
      };
      const read: Record<string, number> = {};
      const client = await db.pool.connect();
      try {
        // The plan a prepared statement keeps after its first five runs.
        await client.query("set plan_cache_mode = force_generic_plan");
        for (const [name, { text, values }] of Object.entries(fenced)) {
          await client.query("begin");
          try {
            await client.query(`prepare fenced as ${text}`);
            const { rows } = await client.query<{ "QUERY PLAN": Array<{ Plan: PlanNode }> }>(
              `explain (analyze, format json) execute fenced(${values.map(literal).join(", ")})`,
            );
            read[name] = instanceRowsRead(rows[0]!["QUERY PLAN"][0]!.Plan);
          } finally {
            await client.query("rollback");
            await client.query("deallocate all");
          }
        }
      } finally {
        await client.query("reset plan_cache_mode");
        client.release();
      }
      // Three claims: each read by its primary key, a few times over (the lock, the update, the reply).
      expect(Object.entries(read).filter(([, n]) => n > 30)).toEqual([]);
    },
  );
});

describe("the claim's plan", () => {
  it("reads only the rows it claims, however index reads are priced", { timeout: 60_000 }, async () => {
    // A server tuned to price random reads high (random_page_cost) made the claim's generic plan
    // scan instances whole, twice, to claim 200 of 30,000 queued rows: 60,002 rows read. The
    // claim runs with sequential scans and bitmaps off (migration 30), so it walks its indexes.
    await db.pool.query(`truncate ${s}.instances, ${s}.transitions`);
    await db.pool.query(
      `insert into ${s}.instances (machine, step, state, status, queue)
       select 'M', 'start', '{}', 'runnable', 'q' from generate_series(1, 30000)`,
    );
    await db.pool.query(`analyze ${s}.instances`);
    const conn = await db.pool.connect();
    try {
      await conn.query("begin");
      await conn.query("set local random_page_cost = 400");
      const before = await rowsReadSoFar(conn, `${s}.instances`);
      const { rows } = await claimQueries(db.schema).claim(conn, {
        queue: "q",
        machines: ["M"],
        want: 200,
        nodeId: "n",
        leaseMs: 60_000,
        global: null,
        startNow: 200,
        keyedAtMost: 200,
      });
      const read = (await rowsReadSoFar(conn, `${s}.instances`)) - before;
      // Each claimed row found through instances_claim, then updated by its primary key: 400.
      expect(rows).toHaveLength(200);
      expect(read).toBeLessThanOrEqual(600);
    } finally {
      await conn.query("rollback");
      // Its plans were made under that setting: not for anyone else.
      conn.release(true);
    }
  });
});
