// The group commit locks its rows in id order, whatever join the planner picks. Cancel, retry and
// release lock in id order too, so none of them can hold a row the group commit waits for while
// it holds one they wait for. Here the heap order is the reverse of the id order (a few hundred
// rows make the planner hash the join, which walks the heap): with the lowest id locked from a
// side connection, the commit must be waiting for it holding no other row.
import { describe, expect, it } from "vitest";
import { claimQueries } from "../../src/sql/claims.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { doneOutcome } from "../support/outcomes.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const N = 300;

describe("the group commit's lock order", () => {
  it("locks rows in id order even when the heap holds them in reverse", async () => {
    await db.pool.query(
      `insert into ${s}.instances (id, machine, step, state, status, queue, claim_token, lease_expires_at)
       select g, 'M', 'start', '{}', 'running', 'q', 1, now() + interval '1 hour' from generate_series(${N}, 1, -1) g`,
    );
    await db.pool.query(`analyze ${s}.instances`);
    const rows = Array.from({ length: N }, (_, i) => doneOutcome(String(i + 1)));
    const side = await db.pool.connect();
    await side.query("begin");
    await side.query(`select id from ${s}.instances where id = 1 for update`);
    const commit = claimQueries(db.schema).complete(db.pool, { outcomes: rows });
    try {
      await eventually("the commit waiting for row 1", async () => {
        const { rows: waiting } = await db.pool.query(
          `select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like '%json_to_recordset($1::json)%' and pid <> pg_backend_pid()`,
        );
        return waiting.length > 0;
      });
      // Every other row is still free: the commit holds none of them while it waits.
      const { rows: free } = await db.pool.query(`select id from ${s}.instances where id > 1 for update skip locked`);
      expect(free.length).toBe(N - 1);
    } finally {
      await side.query("commit");
      side.release();
    }
    expect((await commit).rows).toHaveLength(N);
  });
});
