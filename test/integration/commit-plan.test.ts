// The group commit finds each row by its primary key, whatever the statistics say. In a deep
// queue, ANALYZE sees almost no running rows; with the claim's fence (token, running) repeated in
// the UPDATE, the planner then joined each outcome to a walk of the partial index instances_lease:
// every row of a batch read every other, quadratic in the batch (500 outcomes filtered 124,750
// rows and took 66 ms instead of 9). Counted here in rows, not timed.
import { describe, expect, it } from "vitest";
import { claimQueries } from "../../src/sql/claims.js";
import { useTestDatabase } from "../support/db.js";
import { doneOutcome } from "../support/outcomes.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const QUEUED = 200_000;
const BATCH = 500;

interface PlanNode {
  "Node Type": string;
  "Rows Removed by Join Filter"?: number;
  "Rows Removed by Filter"?: number;
  "Actual Loops"?: number;
  Plans?: PlanNode[];
}

function rowsFiltered(node: PlanNode): number {
  const own = (node["Rows Removed by Join Filter"] ?? 0) + (node["Rows Removed by Filter"] ?? 0);
  return own + (node.Plans ?? []).reduce((sum, child) => sum + rowsFiltered(child), 0);
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
});
