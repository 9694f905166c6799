// The cron report recipe (examples/cron-report.ts): two nodes run the entry, each tick inserts one report.
import { describe, expect, it } from "vitest";
import { DailyReport, reportEntry } from "../../examples/cron-report.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

describe("a report on a schedule", () => {
  it("inserts one report per tick across two nodes, and each runs once", async () => {
    const nodes = ["a", "b"].map((nodeId) =>
      db.engine({ nodeId, queues: { default: 2 }, machines: [DailyReport], cron: [reportEntry("* * * * * *")] }),
    );
    await Promise.all(nodes.map((node) => node.start()));
    await eventually("three ticks", async () => {
      const { rows } = await db.pool.query(`select count(*)::int as n from ${db.schema}.cron_ticks`);
      return rows[0].n >= 3;
    });
    await Promise.all(nodes.map((node) => node.stop()));
    const { rows } = await db.pool.query<{ ticks: number; reports: number; done: number }>(
      `select (select count(*)::int from ${db.schema}.cron_ticks) as ticks,
              (select count(*)::int from ${db.schema}.instances where machine = 'DailyReport') as reports,
              (select count(*)::int from ${db.schema}.instances where machine = 'DailyReport' and status = 'done') as done`,
    );
    // One instance per fired tick, whichever node fired it.
    expect(rows[0]!.reports).toBe(rows[0]!.ticks);
    const done = await db.pool.query<{ result: { orders: number } }>(
      `select result from ${db.schema}.instances where machine = 'DailyReport' and status = 'done'`,
    );
    for (const row of done.rows) expect(row.result.orders).toBe(3);
    expect(rows[0]!.done).toBeGreaterThan(0);
  });
});
