import { readStatusReport, type StatusReport } from "../../status-report.js";
import { EXIT_OK, type Command } from "../cli.js";
import { CLIENT_OPTIONS, printJson, withClient } from "../client.js";
import { duration, relative, table } from "../table.js";

/** Node rows listed; the count of all of them is printed anyway. */
const MAX_NODES = 100;

export const statusCommand: Command = {
  name: "status",
  summary:
    "counts per queue (runnable, scheduled, running, awaiting, joining, failed), live nodes, " +
    "and the busiest tables' dead tuples and last vacuum",
  description: [
    "Per queue: instances runnable now, scheduled for later, running, awaiting",
    "signals, joining children and failed; how long the oldest runnable instance",
    "has been due; whether the queue is paused. Then the nodes whose heartbeat is",
    "within their lease. Then gen-durable's busiest tables: live and dead tuples,",
    "the last vacuum and autovacuum, and warnings when autovacuum cannot run on",
    "them or their dead tuples pile up. Read in one snapshot; each count scans only",
    "the index of its status (done and cancelled instances are not counted).",
  ].join("\n"),
  options: CLIENT_OPTIONS,
  async run(values, io) {
    return withClient(this, values, io, async ({ pool, schema, json }) => {
      const report = await readStatusReport(pool, schema, { maxNodes: MAX_NODES });
      if (json) {
        printJson(io, report);
        return EXIT_OK;
      }
      for (const line of statusText(report)) io.out(line);
      return EXIT_OK;
    });
  },
};

/** The report as `gen-durable status` prints it: the queues, the living nodes, the tables and their warnings. */
export function statusText(report: StatusReport): string[] {
  const now = report.databaseTime;
  const lines = [`schema ${report.schema}, database time ${now.toISOString()}`, ""];
  if (report.queues.length === 0) {
    lines.push("no queues: no live or failed instances");
  } else {
    const n = (x: number) => String(x);
    const columns = [
      { header: "QUEUE" },
      { header: "PAUSED" },
      ...["RUNNABLE", "SCHEDULED", "RUNNING", "AWAITING", "JOINING", "FAILED", "OLDEST DUE"].map((header) => ({
        header,
        align: "right" as const,
      })),
    ];
    const rows = report.queues.map((q) => [
      q.queue,
      q.paused ? "yes" : "no",
      n(q.runnable),
      n(q.scheduled),
      n(q.running),
      n(q.awaiting),
      n(q.joining),
      n(q.failed),
      q.oldestDueMs === null ? "-" : duration(q.oldestDueMs),
    ]);
    lines.push(...table(columns, rows));
  }
  const { alive, total, list } = report.nodes;
  const gone = total > alive ? `, ${total - alive} gone (no heartbeat within their lease)` : "";
  lines.push("", `nodes: ${alive} alive${gone}`);
  const living = list.filter((node) => node.alive);
  if (living.length > 0) {
    const rows = living.map((node) => [
      node.id,
      node.queues.join(",") || "-",
      node.machines.join(",") || "-",
      relative(node.startedAt, now),
      relative(node.heartbeatAt, now),
    ]);
    const columns = [
      { header: "NODE" },
      { header: "QUEUES" },
      { header: "MACHINES" },
      { header: "STARTED" },
      { header: "HEARTBEAT" },
    ];
    lines.push("", ...table(columns, rows));
  }
  const { vacuum } = report;
  lines.push("", `tables (autovacuum ${vacuum.autovacuum && vacuum.trackCounts ? "on" : "OFF"} on the server):`);
  const never = (d: Date | null) => (d === null ? "never" : relative(d, now));
  const tableRows = vacuum.tables.map((t) => [
    t.table,
    String(Math.round(t.liveTuples)),
    String(Math.round(t.deadTuples)),
    never(t.lastVacuum),
    never(t.lastAutovacuum),
    t.autovacuumEnabled ? "on" : "OFF",
  ]);
  const tableColumns = [
    { header: "TABLE" },
    { header: "LIVE", align: "right" as const },
    { header: "DEAD", align: "right" as const },
    { header: "LAST VACUUM" },
    { header: "LAST AUTOVACUUM" },
    { header: "AUTOVACUUM" },
  ];
  lines.push(...table(tableColumns, tableRows), ...vacuum.warnings.map((warning) => `warning: ${warning.message}`));
  return lines;
}
