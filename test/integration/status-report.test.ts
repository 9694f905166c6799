/**
 * The status report is what `gen-durable status`, the dashboard's overview and the queue-depth
 * gauge all read: on the same rows they give the same counts (the gauge's runnable being due and
 * scheduled together, and failed left out of it).
 */
import { describe, expect, it } from "vitest";
import { statusText } from "../../src/cli/commands/status.js";
import { readStatusReport } from "../../src/status-report.js";
import { QueueDepthSampler } from "../../src/telemetry/queue-depth.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

/** Rows written straight into the table: no engine runs here, so none of them moves. */
async function rows(queue: string, status: string, n: number, extra: { dueInS?: number; key?: string } = {}) {
  await db.pool.query(
    `insert into ${s}.instances (machine, step, state, queue, status, run_at, concurrency_key)
     select 'M', 's', '{}', $1, $2, now() + $3 * interval '1 second', $4 from generate_series(1, $5)`,
    [queue, status, extra.dueInS ?? -60, extra.key ?? null, n],
  );
}

describe("the status report", () => {
  it("counts each queue's statuses once for the CLI, the dashboard and the depth gauge", async () => {
    await rows("alpha", "runnable", 2);
    await rows("alpha", "runnable", 1, { key: "k" });
    await rows("alpha", "runnable", 1, { dueInS: 3600 });
    await rows("alpha", "running", 1);
    await rows("alpha", "awaiting", 2);
    await rows("alpha", "joining", 1);
    await rows("alpha", "failed", 3);
    await rows("alpha", "done", 5);
    await rows("beta", "failed", 1);
    await rows("gamma", "cancelled", 1);
    await db.pool.query(`insert into ${s}.queues (name, paused) values ('delta', true), ('beta', true)`);

    const report = await readStatusReport(db.pool, db.schema, { maxNodes: 10 });
    expect(report.queues.map((q) => q.queue)).toEqual(["alpha", "beta", "delta"]);
    const [alpha, beta, delta] = report.queues;
    expect(alpha).toMatchObject({
      paused: false,
      runnable: 3,
      scheduled: 1,
      running: 1,
      awaiting: 2,
      joining: 1,
      failed: 3,
    });
    expect(alpha!.oldestDueMs).toBeGreaterThanOrEqual(60_000);
    expect(beta).toMatchObject({ paused: true, runnable: 0, failed: 1, oldestDueMs: null });
    expect(delta).toMatchObject({ paused: true, runnable: 0, failed: 0 });
    expect(statusText(report).find((line) => line.startsWith("alpha "))).toMatch(
      /^alpha\s+no\s+3\s+1\s+1\s+2\s+1\s+3\s+1m( \d+s)?$/,
    );

    const depth = await new QueueDepthSampler(db.pool, db.schema, 0, ["delta"], (e) => {
      throw e;
    }).read();
    expect(depth).toEqual(
      expect.arrayContaining([
        { queue: "alpha", status: "runnable", count: 4 },
        { queue: "alpha", status: "running", count: 1 },
        { queue: "alpha", status: "awaiting", count: 2 },
        { queue: "alpha", status: "joining", count: 1 },
        { queue: "delta", status: "runnable", count: 0 },
      ]),
    );
    // Live statuses only: beta holds a failed instance and nothing live, so the gauge has nothing of it.
    expect(depth.filter((row) => row.queue === "beta")).toEqual([]);
    expect(depth).toHaveLength(4 + 4);
  });
});
