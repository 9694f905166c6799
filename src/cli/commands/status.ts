import type pg from "pg";
import { statusQueries } from "../../sql/status.js";
import { EXIT_OK, type Command } from "../cli.js";
import { CLIENT_OPTIONS, printJson, withClient } from "../client.js";
import { duration, relative, table } from "../table.js";
import { readVacuumHealth, type VacuumHealth } from "../../telemetry/table-health.js";

/** Node rows listed; the count of all of them is printed anyway. */
const MAX_NODES = 100;

export interface QueueStatus {
  queue: string;
  paused: boolean;
  /** Due now. */
  runnable: number;
  /** Runnable but due later (delay, runAt, backoff, snooze). */
  scheduled: number;
  running: number;
  awaiting: number;
  joining: number;
  failed: number;
  /** How long the longest-waiting due row has been due, in ms; null when none is due. */
  oldestDueMs: number | null;
}

export interface NodeStatus {
  id: string;
  machines: string[];
  queues: string[];
  startedAt: Date;
  heartbeatAt: Date;
  alive: boolean;
}

export interface StatusReport {
  schema: string;
  databaseTime: Date;
  queues: QueueStatus[];
  nodes: { alive: number; total: number; list: NodeStatus[] };
  /**
   * The busiest tables: live and dead tuples, last vacuum, whether autovacuum may run on them; and what an operator
   * should fix.
   */
  vacuum: Omit<VacuumHealth, "databaseTime">;
}

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
      const report = await readStatus(pool, schema);
      if (json) {
        printJson(io, report);
        return EXIT_OK;
      }
      const now = report.databaseTime;
      io.out(`schema ${schema}, database time ${now.toISOString()}`);
      io.out("");
      if (report.queues.length === 0) {
        io.out("no queues: no live or failed instances");
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
        for (const line of table(columns, rows)) io.out(line);
      }
      io.out("");
      const { alive, total, list } = report.nodes;
      io.out(
        `nodes: ${alive} alive${total > alive ? `, ${total - alive} gone (no heartbeat within their lease)` : ""}`,
      );
      const living = list.filter((node) => node.alive);
      if (living.length > 0) {
        io.out("");
        const rows = living.map((node) => [
          node.id,
          node.queues.join(",") || "-",
          node.machines.join(",") || "-",
          relative(node.startedAt, now),
          relative(node.heartbeatAt, now),
        ]);
        for (const line of table(
          [
            { header: "NODE" },
            { header: "QUEUES" },
            { header: "MACHINES" },
            { header: "STARTED" },
            { header: "HEARTBEAT" },
          ],
          rows,
        ))
          io.out(line);
      }
      const { vacuum } = report;
      io.out("");
      io.out(`tables (autovacuum ${vacuum.autovacuum && vacuum.trackCounts ? "on" : "OFF"} on the server):`);
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
      for (const line of table(tableColumns, tableRows)) io.out(line);
      for (const warning of vacuum.warnings) io.out(`warning: ${warning.message}`);
      return EXIT_OK;
    });
  },
};

/** Everything `status` reports, read in one REPEATABLE READ snapshot so the numbers agree with each other. */
export async function readStatus(pool: pg.Pool, schema: string): Promise<StatusReport> {
  const q = statusQueries(schema);
  const client = await pool.connect();
  try {
    await client.query("begin isolation level repeatable read read only");
    const { rows: nowRows } = await client.query<{ now: Date }>(q.now);
    const { rows: runnable } = await client.query<{
      queue: string;
      due: string;
      scheduled: string;
      oldest_due: Date | null;
    }>(q.runnable);
    const { rows: counts } = await client.query<{ queue: string; status: string; n: string }>(q.counts);
    const { rows: queueRows } = await client.query<{ name: string; paused: boolean }>(q.queues);
    const { rows: nodeRows } = await client.query<{
      id: string;
      machines: string[];
      queues: string[];
      started_at: Date;
      heartbeat_at: Date;
      alive: boolean;
    }>(q.nodes, [MAX_NODES]);
    const { rows: nodeCount } = await client.query<{ alive: number; total: number }>(q.nodeCount);
    const { databaseTime: _, ...vacuum } = await readVacuumHealth(client, schema);
    await client.query("commit");
    const now = nowRows[0]!.now;

    const queues = new Map<string, QueueStatus>();
    const entry = (queue: string): QueueStatus => {
      let found = queues.get(queue);
      if (!found) {
        found = {
          queue,
          paused: false,
          runnable: 0,
          scheduled: 0,
          running: 0,
          awaiting: 0,
          joining: 0,
          failed: 0,
          oldestDueMs: null,
        };
        queues.set(queue, found);
      }
      return found;
    };
    for (const row of runnable) {
      const e = entry(row.queue);
      e.runnable = Number(row.due);
      e.scheduled = Number(row.scheduled);
      e.oldestDueMs = row.oldest_due ? Math.max(0, now.getTime() - row.oldest_due.getTime()) : null;
    }
    for (const row of counts)
      entry(row.queue)[row.status as "running" | "awaiting" | "joining" | "failed"] = Number(row.n);
    // A paused queue is worth showing even when empty; a resumed empty one is not.
    for (const row of queueRows) if (row.paused || queues.has(row.name)) entry(row.name).paused = row.paused;
    const list = nodeRows.map((r) => ({
      id: r.id,
      machines: r.machines,
      queues: r.queues,
      startedAt: r.started_at,
      heartbeatAt: r.heartbeat_at,
      alive: r.alive,
    }));
    // Queues that live nodes serve appear even with nothing in them: "is anyone working checkout?" is answered by a
    // row.
    for (const node of list) if (node.alive) for (const queue of node.queues) entry(queue);
    return {
      schema,
      databaseTime: now,
      queues: [...queues.values()].sort((a, b) => a.queue.localeCompare(b.queue)),
      nodes: { alive: nodeCount[0]!.alive, total: nodeCount[0]!.total, list },
      vacuum,
    };
  } catch (error) {
    await client.query("rollback").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}
