// The done that finishes an instance is kept in its row (migration 20), not in `transitions`: every
// reader of the history (engine.history, the dashboard's hour chart and graph, prune's counts) still
// sees it, once, and instances finished before migration 20 (their done in `transitions`) read alike.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine } from "../../src/index.js";
import { dashboardQueries } from "../../src/sql/dashboard.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = db.schema;

const Order = defineMachine({
  name: "Order",
  queue: "history",
  state: z.object({ n: z.number() }),
  steps: {
    start: (ctx) => ctx.next("finish", { n: ctx.state.n + 1 }),
    // Long enough that its duration cannot read as 0 ms.
    finish: async (ctx) => {
      ctx.publish("total", ctx.state.n);
      await new Promise((resolve) => setTimeout(resolve, 25));
      return ctx.done({ total: ctx.state.n });
    },
  },
});
const Flaky = defineJob({
  name: "Flaky",
  queue: "history",
  args: z.object({}),
  maxAttempts: 2,
  backoff: { type: "fixed", delay: 0 },
  perform: (_args, ctx) => {
    if (ctx.attempt === 1) throw new Error("first attempt fails");
    return "ok";
  },
});

const engine = db.engine({ queues: { history: 4 }, machines: [Order, Flaky] });
await engine.start();

const doneRows = async (id: string) =>
  (
    await db.pool.query<{ n: number }>(
      `select count(*)::int as n from ${s}.transitions where instance_id = $1 and outcome = 'done'`,
      [id],
    )
  ).rows[0]!.n;

describe("the done kept in the instance row", () => {
  it("history() reads it back: its step, attempt, duration and time, before what the step published", async () => {
    const { id } = await engine.insert(Order, { state: { n: 1 } });
    const finished = await engine.wait(id, { timeout: 10_000 });
    expect(finished.status).toBe("done");
    const history = await engine.history(id);
    expect(history.map((h) => [h.fromStep, h.toStep, h.outcome, h.attempt])).toEqual([
      ["start", "finish", "next", 1],
      ["finish", null, "done", 1],
      ["finish", null, "published", 0],
    ]);
    const done = history[1]!;
    expect(done.durationMs).toBeGreaterThanOrEqual(20);
    expect(done.at.getTime()).toBe(finished.updatedAt.getTime());
    expect(done.error).toBeUndefined();
    // Written where history() found it, and not in transitions.
    expect(await doneRows(id)).toBe(0);
    const { rows } = await db.pool.query(`select done_duration_ms from ${s}.instances where id = $1`, [id]);
    expect(rows[0].done_duration_ms).toBe(done.durationMs);
  });

  it("a job's failed attempt stays a history row; its done after the retry is in the row", async () => {
    const { id } = await engine.insert(Flaky, { args: {} });
    await engine.wait(id, { timeout: 10_000 });
    const history = await engine.history(id);
    expect(history.map((h) => [h.fromStep, h.outcome, h.attempt])).toEqual([
      ["perform", "error", 1],
      ["perform", "done", 2],
    ]);
    expect(history[0]!.error?.message).toBe("first attempt fails");
  });

  it("an instance finished before migration 20 (its done in transitions) reads the same, once", async () => {
    const { id } = await engine.insert(Order, { state: { n: 5 } });
    await engine.wait(id, { timeout: 10_000 });
    const now = await engine.history(id);
    // The form such an instance has: its done as a transitions row written before the step's
    // published row (the commit wrote the outcome first), the column null. One session: a temporary table.
    const client = await db.pool.connect();
    await client.query(
      `create temporary table published_rows as
      select * from ${s}.transitions where instance_id = $1 and outcome = 'published' and to_step is null`,
      [id],
    );
    await client.query(`delete from ${s}.transitions where id in (select id from published_rows)`);
    await client.query(
      `with moved as (
         update ${s}.instances set done_duration_ms = null where id = $1
         returning id, step, attempt, updated_at, $2::int as ms)
       insert into ${s}.transitions (instance_id, at, from_step, to_step, outcome, attempt, duration_ms)
       select id, updated_at, step, null, 'done', attempt, ms from moved`,
      [id, now.find((t) => t.outcome === "done")!.durationMs],
    );
    await client.query(`insert into ${s}.transitions (instance_id, at, from_step, to_step, outcome, attempt, published)
      select instance_id, at, from_step, to_step, outcome, attempt, published from published_rows`);
    client.release();
    expect(await engine.history(id)).toEqual(now);
  });

  it("the dashboard's hour chart and the machine graph count it once", async () => {
    const q = dashboardQueries(s);
    const before = await q.throughput(db.pool);
    const total = (rows: typeof before.rows) => rows.reduce((sum, r) => sum + r.n, 0);
    const edges = async () =>
      (await q.edges(db.pool, { machine: "Order", windowS: 3600 })).rows.find(
        (e) => e.from_step === "finish" && e.outcome === "done",
      );
    const doneBefore = (await edges())?.n ?? 0;
    const ids = await engine.insertMany([1, 2, 3].map((n) => ({ machine: Order, state: { n } })));
    for (const { id } of ids) await engine.wait(id, { timeout: 10_000 });
    // Each Order: next, published, done.
    expect(total((await q.throughput(db.pool)).rows) - total(before.rows)).toBe(9);
    const done = await edges();
    expect(done).toMatchObject({ to_step: null, n: doneBefore + 3, errors: 0 });
    expect(done!.p50_ms).toBeGreaterThanOrEqual(20);
  });

  it("prune counts it among the history rows it deleted", async () => {
    const { id } = await engine.insert(Flaky, { args: {} });
    await engine.wait(id, { timeout: 10_000 });
    const pruned = await engine.prune({ olderThan: 0, machine: "Flaky" });
    // Two Flaky instances by now, each with its error row and its done.
    expect(pruned).toMatchObject({ instances: 2, transitions: 4 });
  });
});
