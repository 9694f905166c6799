/**
 * Where the time of a phase goes, per job: statements sent, transactions committed, rows
 * written, WAL bytes, and CPU in Node against CPU in Postgres. Read around a phase:
 *
 *   statements  pg.Client#query calls from this process, except the harness's own (its admin
 *               pool's clients are marked). One count per round trip a system asks for.
 *   commits     pg_stat_database.xact_commit of the database (every client, the harness's
 *               few polls included).
 *   rows        tup_inserted + tup_updated + tup_deleted of the database.
 *   WAL bytes   pg_current_wal_insert_lsn() before and after: everything the server wrote.
 *   CPU         Node: process.cpuUsage() of this process (harness included). Postgres: user +
 *               system time of the server's processes from /proc (the postmaster's children),
 *               plus what the postmaster collected from backends that exited (cutime + cstime),
 *               so a worker's closed connections still count. Only when the server runs on
 *               this host (Linux).
 *
 * Database-wide and server-wide figures are only this run's when nothing else uses the
 * database and the server: the embedded server `npm run bench` starts by default.
 *
 * Postgres reports a backend's counters to pg_stat_database when it exits, and when it goes
 * idle at most once a second, leaving the rest for 10 s of idleness (PGSTAT_IDLE_INTERVAL). So
 * each snapshot waits that long: the one before, for the earlier phases' counters; the one after,
 * for the counters of connections that stay open (the producers').
 */
import { readdirSync, readFileSync } from "node:fs";
import pg from "pg";
import { round, sleep } from "./util.js";

export interface Cost {
  statements: number;
  commits: number;
  rowsWritten: number;
  walBytes: number;
  /** CPU milliseconds; null when the server's processes cannot be read from /proc. */
  nodeCpuMs: number;
  postgresCpuMs: number | null;
}

let statements = 0;
const ADMIN = Symbol("bench admin client");

/** Counts every query of this process's pg clients, except those of `admin` (call once). */
export function countStatements(admin: pg.Pool): void {
  admin.on("connect", (client) => {
    (client as unknown as Record<symbol, boolean>)[ADMIN] = true;
  });
  const original = pg.Client.prototype.query;
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    if (!(this as unknown as Record<symbol, boolean>)[ADMIN]) statements++;
    return (original as (...a: unknown[]) => unknown).apply(this, args);
  } as typeof original;
}

interface Snapshot {
  statements: number;
  commits: number;
  rows: number;
  lsn: string;
  node: NodeJS.CpuUsage;
  postgres: number | null;
}

const TICKS_PER_SECOND = 100;

/** [own, reaped] CPU ticks of a process, or null when /proc does not have it. */
function ticks(pid: number): { ppid: number; own: number; reaped: number } | null {
  let stat: string;
  try {
    stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return null;
  }
  // Fields after the command's closing parenthesis: state ppid ... utime stime cutime cstime (14th to 17th of all).
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return { ppid: Number(f[1]), own: Number(f[11]) + Number(f[12]), reaped: Number(f[13]) + Number(f[14]) };
}

/**
 * User + system CPU ms of the server that `backendPid` belongs to: its postmaster, what the
 * postmaster reaped from exited children, and every live child. Other servers on the host (and
 * their clients) are not counted.
 */
function postgresCpuMs(backendPid: number): number | null {
  const backend = ticks(backendPid);
  if (!backend) return null;
  const postmaster = backend.ppid;
  const root = ticks(postmaster);
  if (!root) return null;
  let total = root.own + root.reaped;
  let pids: string[];
  try {
    pids = readdirSync("/proc").filter((e) => /^\d+$/.test(e));
  } catch {
    return null;
  }
  for (const pid of pids) {
    const child = ticks(Number(pid));
    if (child && child.ppid === postmaster) total += child.own;
  }
  return (total / TICKS_PER_SECOND) * 1000;
}

async function snapshot(admin: pg.Pool): Promise<Snapshot> {
  await admin.query("select pg_stat_clear_snapshot()");
  const { rows } = await admin.query<{ commits: string; rows: string; lsn: string; pid: number }>(
    `select xact_commit::text as commits, (tup_inserted + tup_updated + tup_deleted)::text as rows,
            pg_current_wal_insert_lsn()::text as lsn, pg_backend_pid() as pid
     from pg_stat_database where datname = current_database()`,
  );
  const r = rows[0]!;
  return {
    statements,
    commits: Number(r.commits),
    rows: Number(r.rows),
    lsn: r.lsn,
    node: process.cpuUsage(),
    postgres: postgresCpuMs(r.pid),
  };
}

/** How long an idle backend may keep its counters to itself (PGSTAT_IDLE_INTERVAL), and a margin. */
const STATS_SETTLE_MS = 10_500;

/** Runs `body` and reports its cost per job. */
export async function measureCost<T>(admin: pg.Pool, jobs: number, body: () => Promise<T>): Promise<[T, Cost]> {
  await sleep(STATS_SETTLE_MS);
  const before = await snapshot(admin);
  const result = await body();
  await sleep(STATS_SETTLE_MS);
  const after = await snapshot(admin);
  const { rows } = await admin.query<{ bytes: string }>("select pg_wal_lsn_diff($1, $2)::text as bytes", [
    after.lsn,
    before.lsn,
  ]);
  const node = process.cpuUsage(before.node);
  const per = (n: number) => round(n / jobs, 2);
  return [
    result,
    {
      statements: per(after.statements - before.statements),
      commits: per(after.commits - before.commits),
      rowsWritten: per(after.rows - before.rows),
      walBytes: round(Number(rows[0]!.bytes) / jobs),
      nodeCpuMs: round((node.user + node.system) / 1000 / jobs, 3),
      postgresCpuMs:
        after.postgres === null || before.postgres === null
          ? null
          : round((after.postgres - before.postgres) / jobs, 3),
    },
  ];
}
