// A machine's instances are read through indexes: instances_machine holds only the rows that
// stay put (awaiting, joining, finished), and the rows in flight (runnable, running) are read
// through their status's index. The lists filtered by machine (engine.list, the dashboard's list,
// count and bulk selection, the CLI's bulk selection, the machine page's live steps and the
// machines list) are unions of such branches: they must return exactly what the plain filter
// returns, and read rows in proportion to what they return and to the work in flight, never to
// the table. Rows read are counted, not timed.
import type pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { cliQueries } from "../../src/sql/cli.js";
import { dashboardQueries, type InstanceFilter } from "../../src/sql/dashboard.js";
import { instanceQueries } from "../../src/sql/instances.js";
import type { Status } from "../../src/status.js";
import { rowsReadSoFar, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const FINISHED = 20_000;

/** Rows of one machine in one status, inserted directly (no engine runs here). */
async function rows(n: number, machine: string, status: Status, options: { keyed?: boolean; queue?: string } = {}) {
  await db.pool.query(
    `insert into ${s}.instances (machine, step, state, status, queue, concurrency_key, leased_by, lease_expires_at)
     select $1, 'start', '{}', $2, $3, case when $4 then 'k' || g end,
            case when $2 = 'running' then 'n' end, case when $2 = 'running' then now() + interval '1 hour' end
     from generate_series(1, $5::int) g`,
    [machine, status, options.queue ?? "q", options.keyed ?? false, n],
  );
}

let conn: pg.PoolClient;

beforeAll(async () => {
  // Interleaved, so that no machine's rows sit together at one end of the table.
  for (let i = 0; i < 4; i++) {
    await rows(FINISHED / 4, "Common", "done");
    await rows(2, "Rare", "done");
    await rows(10, "Common", "runnable");
    await rows(3, "Common", "runnable", { keyed: true });
    await rows(1, "Rare", "runnable", { queue: "r" });
    await rows(2, "Common", "running");
    await rows(2, "Common", "awaiting");
    await rows(1, "Rare", "failed");
  }
  await db.pool.query(`vacuum analyze ${s}.instances`);
  conn = await db.pool.connect();
});

afterAll(() => conn.release());

/** Runs `read` in a transaction on one connection; returns its result and the rows of instances it read. */
async function counted<T>(read: (c: pg.ClientBase) => Promise<T>): Promise<{ result: T; read: number }> {
  await conn.query("begin");
  try {
    const before = await rowsReadSoFar(conn, `${s}.instances`);
    const result = await read(conn);
    return { result, read: (await rowsReadSoFar(conn, `${s}.instances`)) - before };
  } finally {
    await conn.query("rollback");
  }
}

const MACHINES = [null, "Common", "Rare", "Missing"];
const STATUS_SETS: Array<Status[] | null> = [
  null,
  ["runnable"],
  ["running"],
  ["done"],
  ["awaiting", "done"],
  ["runnable", "failed"],
  ["running", "awaiting"],
];

/** The ids the plain filter selects, newest first: what every branched statement must return. */
async function expected(machine: string | null, statuses: Status[] | null, before: string | null, limit: number) {
  const { rows: found } = await db.pool.query<{ id: string }>(
    `select i.id::text as id from ${s}.instances i
     where ($1::text is null or i.machine = $1) and ($2::text[] is null or i.status = any($2))
       and ($3::bigint is null or i.id < $3)
     order by i.id desc limit $4`,
    [machine, statuses, before, limit],
  );
  return found.map((r) => r.id);
}

describe("lists filtered by machine", () => {
  it("return what the plain filter returns, for every machine and status set, page by page", async () => {
    const list = instanceQueries(db.schema).list;
    const dashboard = dashboardQueries(db.schema);
    for (const machine of MACHINES)
      for (const statuses of STATUS_SETS) {
        const filter: InstanceFilter = { machine, statuses, queue: null, key: null, from: null, to: null };
        let before: string | null = null;
        // Three pages of 7: the cursor crosses the branches.
        for (let page = 0; page < 3; page++) {
          const want = await expected(machine, statuses, before, 7);
          const args = { machine, statuses, queue: null, correlationKey: null, after: before, limit: 7 };
          const got = (await list(db.pool, args)).rows.map((r) => r.id);
          expect(got, JSON.stringify({ machine, statuses, before })).toEqual(want);
          const ids = (await dashboard.ids(db.pool, { filter, before, limit: 7 })).rows.map((r) => r.id);
          expect(ids).toEqual(want);
          const page1 = (await dashboard.list(db.pool, { filter, before, limit: 7 })).rows.map((r) => r.id);
          expect(page1).toEqual(want);
          before = want[want.length - 1] ?? null;
          if (before === null) break;
        }
        const all = await expected(machine, statuses, null, 1_000_000);
        const capped = (await dashboard.count(db.pool, { filter, limit: 100 })).rows[0]!.n;
        expect(capped).toBe(Math.min(all.length, 100));
      }
  });

  it("the command line's bulk selection returns the plain filter's ids in id order, batch by batch", async () => {
    const q = cliQueries(db.schema);
    for (const machine of MACHINES)
      for (const statuses of STATUS_SETS.filter((set) => set !== null)) {
        const selection = { statuses, machine, queue: null, olderThanMs: null };
        const want = (await expected(machine, statuses, null, 1_000_000)).reverse();
        expect((await q.count(db.pool, { selection })).rows[0]!.n).toBe(want.length);
        const got: string[] = [];
        for (let after = "0"; ;) {
          const { rows: batch } = await q.ids(db.pool, { selection, after, limit: 5_000 });
          got.push(...batch.map((r) => r.id));
          if (batch.length < 5_000) break;
          after = batch[batch.length - 1]!.id;
        }
        expect(got, JSON.stringify({ machine, statuses })).toEqual(want);
      }
  });

  it("read rows in proportion to the page and the work in flight, not to the finished rows", async () => {
    const list = instanceQueries(db.schema).list;
    const page = (machine: string, statuses: Status[] | null) =>
      counted((c) => list(c, { machine, statuses, queue: null, correlationKey: null, after: null, limit: 50 }));
    // In flight: 4 × (10 + 3 + 1 + 2) = 64 rows of every machine, read and filtered by machine.
    const inFlight = 64;
    for (const [machine, statuses] of [
      ["Common", null],
      ["Common", ["runnable"]],
      ["Common", ["done"]],
      ["Rare", null],
      ["Rare", ["done", "failed"]],
    ] as const) {
      const { result, read } = await page(machine, statuses === null ? null : [...statuses]);
      expect(result.rows.length).toBeGreaterThan(0);
      expect(read, `${machine} ${JSON.stringify(statuses)}`).toBeLessThanOrEqual(50 + inFlight + 10);
    }
  });

  it("the machine page's live steps read the live rows only", async () => {
    const { result, read } = await counted((c) => dashboardQueries(db.schema).liveSteps(c, { machine: "Common" }));
    const counts = Object.fromEntries(result.rows.map((r) => [r.status, r.n]));
    expect(counts).toEqual({ runnable: 52, running: 8, awaiting: 8 });
    // Live rows of every machine: 64 in flight and 8 awaiting.
    expect(read).toBeLessThanOrEqual(72 + 10);
  });

  it("the machines list probes once per machine and reads the running rows", async () => {
    const { result, read } = await counted((c) => dashboardQueries(db.schema).machines(c, { limit: 10 }));
    expect(result.rows.map((r) => r.machine)).toEqual(["Common", "Rare"]);
    expect(read).toBeLessThanOrEqual(8 + 10);
  });
});
