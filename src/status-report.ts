/**
 * The status report: instances per queue and status, the nodes, and the busiest tables' vacuum
 * health, read in one snapshot. `gen-durable status` prints it (as text or JSON), the dashboard's
 * overview renders it, and the queue-depth gauge reports its queue counts, so the three say the
 * same thing and a count means one thing. The statements are src/sql/status.ts's: each count reads
 * one status through its partial index.
 */
import type pg from "pg";
import type { Queryable } from "./sql/query.js";
import { statusQueries, type StatusQueries } from "./sql/status.js";
import { readVacuumHealth, type VacuumHealth } from "./telemetry/table-health.js";

/** Instances of one queue by status (done and cancelled are not counted). */
export interface StatusCounts {
  /** Due now. */
  runnable: number;
  /** Runnable but due later (delay, runAt, backoff, snooze). */
  scheduled: number;
  running: number;
  awaiting: number;
  joining: number;
  failed: number;
}

/** One queue's counts as read (readQueueCounts). */
export interface QueueCounts extends StatusCounts {
  queue: string;
  /** The run_at of the longest-waiting due row; null when none is due. */
  oldestDue: Date | null;
}

/** One queue as the report shows it. */
export interface QueueStatus extends StatusCounts {
  queue: string;
  paused: boolean;
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
  /** The database clock when the snapshot was taken: every age in the report is measured from it. */
  databaseTime: Date;
  /**
   * By name: every queue with a live or failed instance, every paused queue, and every queue a
   * live node serves (empty ones too: "is anyone working checkout?" is answered by a row).
   */
  queues: QueueStatus[];
  /** How many nodes are alive and registered; `list` holds at most `maxNodes` of them, the living first. */
  nodes: { alive: number; total: number; list: NodeStatus[] };
  /**
   * The busiest tables: live and dead tuples, last vacuum, whether autovacuum may run on them; and what an operator
   * should fix.
   */
  vacuum: Omit<VacuumHealth, "databaseTime">;
}

const emptyCounts = (queue: string): QueueCounts => ({
  queue,
  runnable: 0,
  scheduled: 0,
  running: 0,
  awaiting: 0,
  joining: 0,
  failed: 0,
  oldestDue: null,
});

/**
 * Instances per queue and status, by queue name: every queue with a counted instance. `failed`
 * says whether failed instances are counted too (one more index read, of every failed row the
 * pruner has not removed yet): the report shows them, the depth gauge reports live ones only.
 */
export async function readQueueCounts(
  db: Queryable,
  q: StatusQueries,
  options: { failed: boolean },
): Promise<Map<string, QueueCounts>> {
  const counts = new Map<string, QueueCounts>();
  const entry = (queue: string) => {
    let found = counts.get(queue);
    if (!found) counts.set(queue, (found = emptyCounts(queue)));
    return found;
  };
  for (const row of (await q.runnable(db)).rows) {
    const e = entry(row.queue);
    e.runnable = Number(row.due);
    e.scheduled = Number(row.scheduled);
    e.oldestDue = row.oldest_due;
  }
  for (const row of (await q.live(db)).rows) entry(row.queue)[row.status] = Number(row.n);
  if (options.failed) for (const row of (await q.failed(db)).rows) entry(row.queue).failed = Number(row.n);
  return counts;
}

/**
 * Reads the whole report in one REPEATABLE READ snapshot, so its numbers agree with each other.
 * Lists at most `maxNodes` nodes (all of them are counted).
 */
export async function readStatusReport(
  pool: pg.Pool,
  schema: string,
  options: { maxNodes: number },
): Promise<StatusReport> {
  const q = statusQueries(schema);
  const client = await pool.connect();
  try {
    await client.query("begin isolation level repeatable read read only");
    const now = (await q.now(client)).rows[0]!.now;
    const counts = await readQueueCounts(client, q, { failed: true });
    const { rows: queueRows } = await q.queues(client);
    const { rows: nodeRows } = await q.nodes(client, { limit: options.maxNodes });
    const nodeCount = (await q.nodeCount(client)).rows[0]!;
    const { databaseTime: _, ...vacuum } = await readVacuumHealth(client, schema);
    await client.query("commit");

    const queues = new Map<string, QueueStatus>();
    const entry = (queue: string): QueueStatus => {
      let found = queues.get(queue);
      if (!found) {
        const c = counts.get(queue) ?? emptyCounts(queue);
        found = {
          queue,
          paused: false,
          runnable: c.runnable,
          scheduled: c.scheduled,
          running: c.running,
          awaiting: c.awaiting,
          joining: c.joining,
          failed: c.failed,
          oldestDueMs: c.oldestDue ? Math.max(0, now.getTime() - c.oldestDue.getTime()) : null,
        };
        queues.set(queue, found);
      }
      return found;
    };
    for (const queue of counts.keys()) entry(queue);
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
    for (const node of list) if (node.alive) for (const queue of node.queues) entry(queue);
    return {
      schema,
      databaseTime: now,
      queues: [...queues.values()].sort((a, b) => a.queue.localeCompare(b.queue)),
      nodes: { alive: nodeCount.alive, total: nodeCount.total, list },
      vacuum,
    };
  } catch (error) {
    await client.query("rollback").catch(() => {});
    throw error;
  } finally {
    client.release();
  }
}
