// The group commit locks its rows in id order, whatever join the planner picks and whatever order
// the batch comes in. Cancel, retry and release lock in id order too, so none of them can hold a
// row the group commit waits for while it holds one they wait for. Here the heap order is the
// reverse of the id order, and so is the batch's: on a table of a few thousand rows the planner
// hashes the batch and walks the table (the heap, if it may); on a bigger one it walks the batch,
// finding each row by its primary key. With the lowest id locked from a side connection, the
// commit must be waiting for it holding no other row.
import { describe, expect, it } from "vitest";
import { claimQueries } from "../../src/sql/claims.js";
import { useTestDatabase } from "../support/db.js";
import { waitForLockWait } from "../support/locks.js";
import { doneOutcome } from "../support/outcomes.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const N = 300;

describe("the group commit's lock order", () => {
  it.each([5_000, 40_000])("locks rows in id order, heap and batch in reverse, %i rows", async (TABLE) => {
    await db.pool.query(`truncate ${s}.instances`);
    await db.pool.query(
      `insert into ${s}.instances (id, machine, step, state, status, queue, claim_token, lease_expires_at)
       select g, 'M', 'start', '{}', 'running', 'q', 1, now() + interval '1 hour' from generate_series(${TABLE}, 1, -1) g`,
    );
    await db.pool.query(`analyze ${s}.instances`);
    const rows = Array.from({ length: N }, (_, i) => doneOutcome(String(N - i)));
    const side = await db.pool.connect();
    await side.query("begin");
    await side.query(`select id from ${s}.instances where id = 1 for update`);
    const commit = claimQueries(db.schema).complete(db.pool, { outcomes: rows });
    try {
      // This schema's commit: other test files' group commits on the server may wait for locks too.
      await waitForLockWait(db.pool, "the commit, for row 1,", [`${s}.complete_outcomes(`]);
      // Every other row is still free: the commit holds none of them while it waits.
      const { rows: free } = await db.pool.query(`select id from ${s}.instances where id > 1 for update skip locked`);
      expect(free.length).toBe(TABLE - 1);
    } finally {
      await side.query("commit");
      side.release();
    }
    expect((await commit).rows).toHaveLength(N);
  });
});
