/**
 * Recipe: a report sent every weekday morning. A `cron` entry inserts one `DailyReport` job per tick
 * — once across all nodes, however many run the entry — and the job reads yesterday's orders from
 * the application's own table and sends the summary. A tick missed while every node was down is
 * made up once when one comes back (`missed: "latest"`, the default).
 *
 * The job is idempotent on its tick: it sends with the tick's date as the delivery key, so a
 * retried attempt (a crash after the send, before the commit) does not send the report twice.
 *
 *   node --import tsx examples/cron-report.ts     (DATABASE_URL: a migrated database)
 */
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { defineJob, GenDurable, migrate, type CronEntry } from "../src/index.js";

/** Stands in for the email service: one entry per delivery key, so a repeated send is a no-op. */
export const sent = new Map<string, string>();

export const DailyReport = defineJob({
  name: "DailyReport",
  args: z.object({ team: z.string() }),
  perform: async ({ team }, ctx) => {
    // The engine's clock: database time (and time moved by advanceTime in tests).
    const day = ctx.now().toISOString().slice(0, 10);
    const orders = 3; // a real report would query the application's tables here
    const summary = `${team}: ${orders} orders on the day before ${day}`;
    sent.set(`${team}:${day}`, summary);
    return { day, orders };
  },
});

/** 9:00 every weekday, New York time; `schedule` is a parameter so that a demo can tick every second. */
export function reportEntry(schedule = "0 9 * * 1-5"): CronEntry {
  return {
    name: "daily-report",
    schedule,
    timezone: "America/New_York",
    machine: DailyReport,
    args: { team: "sales" },
  };
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const connectionString = process.env.DATABASE_URL!;
  await migrate({ connectionString });
  // Every second, for the demo: two reports, then stop.
  const engine = new GenDurable({
    connectionString,
    queues: { default: 2 },
    machines: [DailyReport],
    cron: [reportEntry("* * * * * *")],
  });
  await engine.start();
  while (sent.size < 2) await new Promise((resolve) => setTimeout(resolve, 100));
  console.log([...sent.values()]);
  await engine.stop();
}
