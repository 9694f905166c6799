// A node reads the database's clock at start and at every heartbeat, and wakes its scheduler for a
// runAt (a time by the database's clock) from that reading. The reading is taken somewhere within
// the statement's round trip: here the start's heartbeat waits 400 ms or more on a lock, and reads
// the clock only once it has it, at the end of that wait, so the reading puts the database's clock
// about 200 ms ahead of where it is. A wake-up reckoned from it alone fires too early, the claim
// finds the row not yet due, and with the poll an hour away nothing wakes the node again.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine } from "../../src/index.js";
import { instanceQueries } from "../../src/sql/instances.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { sideClient, waitForLockWait } from "../support/locks.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const HELD_MS = 400;

const Later = defineMachine({
  name: "ClockReadingLater",
  queue: "clock-reading",
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.next("later", {}, { runAt: new Date(ctx.insertedAt.getTime() + 100) }),
    later: (ctx) => ctx.done("ran"),
  },
});

describe("a clock reading taken across a long round trip", () => {
  it("does not wake a runAt before the database's clock reaches it", async () => {
    const nodeId = "clock-reading-node";
    const side = await sideClient(db.url);
    await side.query("begin");
    // The start's heartbeat upserts this row: it waits until the transaction ends.
    await side.query(`insert into ${s}.nodes (id, machines, queues, lease_ms) values ($1, '{}', '{}', 60000)`, [
      nodeId,
    ]);
    const engine = db.engine({
      nodeId,
      queues: { "clock-reading": 1 },
      machines: [Later],
      pollInterval: "1h",
      leaseDuration: "60s",
    });
    const started = engine.start();
    await waitForLockWait(db.pool, "the start's heartbeat", ["nodes", "on conflict"]);
    await eventually(`the heartbeat to have waited ${HELD_MS} ms`, async () => {
      const { rows } = await db.pool.query<{ ms: number }>(
        `select extract(epoch from now() - query_start) * 1000 as ms from pg_stat_activity
         where wait_event_type = 'Lock' and strpos(query, 'on conflict') > 0 and strpos(query, 'nodes') > 0`,
      );
      return rows.length > 0 && Number(rows[0]!.ms) >= HELD_MS;
    });
    await side.query("commit");
    await started;

    const { id } = await engine.insert(Later, { state: {} });
    expect((await engine.wait(id, { timeout: 10_000 })).result).toBe("ran");
    const { rows } = await instanceQueries(db.schema).history(db.pool, { id });
    const { rows: inserted } = await db.pool.query<{ at: Date }>(
      `select inserted_at as at from ${s}.instances where id = $1`,
      [id],
    );
    const due = inserted[0]!.at.getTime() + 100;
    expect(rows.map((r) => r.outcome)).toEqual(["next", "done"]);
    expect(rows[1]!.at.getTime()).toBeGreaterThanOrEqual(due);
    console.log(`clock reading across a ${HELD_MS} ms wait: runAt ran ${rows[1]!.at.getTime() - due} ms after it`);
  });
});
