// Joins under retries, GC and crowds: a retried child keeps (or puts back) its parent in `joining`
// until it is terminal again, or is refused once the parent has moved on; the GC keeps what a
// failed parent's join needs; the join sweep serves every parent it can lock, in order.
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine, InvalidStateError } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { blockedOrSettled, Gates, outcome, sideClient } from "../support/locks.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const gates = new Gates();
afterAll(() => {
  for (const name of ["3a", "3b", "first:3b", "3c", "3d", "join:3d"]) gates.open(name);
});

/** Fails its first run (one attempt; after gate `first:key` when `holdFirst`); a retried run waits at its gate, then returns its key. */
const runs = new Map<string, number>();
const Flaky = defineJob({
  name: "Flaky",
  queue: "kids",
  maxAttempts: 1,
  args: z.object({ key: z.string(), holdFirst: z.boolean().optional() }),
  perform: async ({ key, holdFirst }) => {
    const run = (runs.get(key) ?? 0) + 1;
    runs.set(key, run);
    if (run === 1 && holdFirst) await gates.wait(`first:${key}`);
    if (run === 1) throw new Error(`the first run of ${key} fails`);
    await gates.wait(key);
    return key;
  },
});

const Waiter = defineMachine({
  name: "Waiter",
  queue: "kids",
  state: z.object({}),
  steps: { start: (ctx) => ctx.await("go", "end"), end: (ctx) => ctx.done("waited") },
});

/** What each parent's join step saw in ctx.children (statuses), per run. */
const seen = new Map<string, string[][]>();
const Parent = defineMachine({
  name: "Parent",
  queue: "parents",
  state: z.object({ key: z.string(), holdJoin: z.boolean().optional(), holdFirst: z.boolean().optional() }),
  steps: {
    start: (ctx) =>
      ctx.spawn(
        [
          { machine: Flaky, args: { key: ctx.state.key, holdFirst: ctx.state.holdFirst } },
          { machine: Waiter, state: {} },
        ],
        "join",
      ),
    join: async (ctx) => {
      seen.set(ctx.id, [...(seen.get(ctx.id) ?? []), ctx.children.map((c) => c.status)]);
      if (ctx.state.holdJoin) await gates.wait(`join:${ctx.state.key}`);
      return ctx.done(ctx.children.map((c) => c.status));
    },
  },
});

/** Pruned at once when terminal. */
const Part = defineJob({
  name: "Part",
  queue: "kids",
  retention: 0,
  args: z.object({ n: z.number() }),
  perform: async ({ n }) => n * 10,
});

/** Its join fails the first time (one attempt); a retry runs it again. */
const joinFailed = new Set<string>();
const Sum = defineMachine({
  name: "Sum",
  queue: "parents",
  maxAttempts: 1,
  state: z.object({ parts: z.array(z.number()), twice: z.boolean().optional() }),
  steps: {
    start: (ctx) => ctx.spawn([{ machine: Part, args: { n: 100 } }], ctx.state.twice ? "again" : "join"),
    again: (ctx) =>
      ctx.spawn(
        ctx.state.parts.map((n) => ({ machine: Part, args: { n } })),
        "join",
      ),
    join: (ctx) => {
      if (!joinFailed.has(ctx.id)) {
        joinFailed.add(ctx.id);
        throw new Error("the first join fails");
      }
      return ctx.done({
        count: ctx.children.length,
        sum: ctx.children.reduce((total, c) => total + (c.result as number), 0),
      });
    },
  },
});

const Single = defineMachine({
  name: "Single",
  queue: "parents",
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.spawn([{ machine: Part, args: { n: 7 } }], "join"),
    join: (ctx) => ctx.done(ctx.children.map((c) => c.result)),
  },
});

const engine = db.engine({ queues: { parents: 4, kids: 8 }, machines: [Flaky, Waiter, Parent, Part, Sum, Single] });
await engine.start();
const client = db.engine();

interface Row {
  id: string;
  status: string;
  join_counted: boolean;
  children_pending: number | null;
  joined: boolean;
}
async function row(id: string): Promise<Row> {
  const { rows } = await db.pool.query<Row>(
    `select id::text as id, status, join_counted, children_pending, joined from ${s}.instances where id = $1`,
    [id],
  );
  return rows[0]!;
}
async function children(parentId: string): Promise<Row[]> {
  const { rows } = await db.pool.query<Row>(
    `select id::text as id, status, join_counted, children_pending, joined from ${s}.instances where parent_id = $1 order by id`,
    [parentId],
  );
  return rows;
}

/** A Parent whose Flaky child failed (and was counted, when `counted`) while its Waiter child awaits. */
async function parentWithFailedChild(key: string, options: { holdJoin?: boolean } = {}) {
  const { id } = await engine.insert(Parent, { state: { key, ...options } });
  const [flaky, waiter] = await eventually("one child failed and counted, the other awaiting", async () => {
    const kids = await children(id);
    return kids[0]?.status === "failed" && kids[0].join_counted && kids[1]?.status === "awaiting" ? kids : null;
  });
  return { id, flaky: flaky!, waiter: waiter! };
}

describe("retrying a child", () => {
  it("counted by the sweep while the parent joins: the join waits for the retried child again", async () => {
    const { id, flaky, waiter } = await parentWithFailedChild("3a");
    expect(await row(id)).toMatchObject({ status: "joining", children_pending: 1 });
    await client.retry(flaky.id);
    expect(await row(id)).toMatchObject({ status: "joining", children_pending: 2 });
    const retried = await row(flaky.id);
    expect(retried.join_counted).toBe(false);
    expect(["runnable", "running"]).toContain(retried.status);
    await eventually("the retried child to run", () => gates.reached("3a"));
    await client.signal({ id: waiter.id }, "go");
    await eventually("the other child to be counted", async () => (await row(waiter.id)).join_counted);
    // The retried child is still running: the parent must still be joining.
    expect(await row(id)).toMatchObject({ status: "joining", children_pending: 1 });
    gates.open("3a");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual(["done", "done"]);
    expect(seen.get(id)).toEqual([["done", "done"]]);
  });

  it("not yet counted (the sweep could not lock the parent): the join waits for it too", async () => {
    const { id } = await engine.insert(Parent, { state: { key: "3b", holdFirst: true } });
    await eventually("the child's first run", () => gates.reached("first:3b"));
    // Held before the child fails: the sweep skips the parent, so the failed child stays uncounted.
    const side = await sideClient(db.url);
    await side.query("begin");
    await side.query(`select 1 from ${s}.instances where id = $1 for update`, [id]);
    gates.open("first:3b");
    const [flaky, waiter] = await eventually("one child failed, the other awaiting", async () => {
      const kids = await children(id);
      return kids[0]?.status === "failed" && kids[1]?.status === "awaiting" ? kids : null;
    });
    const retrying = outcome(client.retry(flaky!.id));
    await blockedOrSettled(db.pool, "retry", retrying, [db.schema, "retr"]);
    await side.query("commit");
    expect((await retrying).ok).toBe(true);
    expect(await row(flaky!.id)).toMatchObject({ join_counted: false });
    expect(await row(id)).toMatchObject({ status: "joining", children_pending: 2 });
    await eventually("the retried child to run", () => gates.reached("3b"));
    await client.signal({ id: waiter!.id }, "go");
    await eventually("the other child to be counted", async () => (await row(waiter!.id)).join_counted);
    expect(await row(id)).toMatchObject({ status: "joining", children_pending: 1 });
    gates.open("3b");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual(["done", "done"]);
  });

  it("after the join was counted but before the join step ran: the parent goes back to joining", async () => {
    const { id, flaky, waiter } = await parentWithFailedChild("3c");
    await client.pauseQueue("parents");
    try {
      await client.signal({ id: waiter.id }, "go");
      await eventually("the parent to have joined", async () => (await row(id)).status === "runnable");
      expect(await row(id)).toMatchObject({ joined: true });
      await client.retry(flaky.id);
      expect(await row(id)).toMatchObject({ status: "joining", children_pending: 1, joined: false });
      expect((await client.history(id)).map((t) => t.outcome)).toEqual(["spawn", "joined", "rejoin"]);
    } finally {
      await client.resumeQueue("parents");
    }
    await eventually("the retried child to run", () => gates.reached("3c"));
    expect(await row(id)).toMatchObject({ status: "joining" });
    gates.open("3c");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual(["done", "done"]);
    expect(seen.get(id)).toEqual([["done", "done"]]);
    expect((await client.history(id)).map((t) => t.outcome)).toEqual(["spawn", "joined", "rejoin", "joined", "done"]);
  });

  it("once the parent's join step has started, or the parent finished: refused", async () => {
    const { id, flaky, waiter } = await parentWithFailedChild("3d", { holdJoin: true });
    await client.signal({ id: waiter.id }, "go");
    await eventually("the join step to run", () => gates.reached("join:3d"));
    const running = outcome(client.retry(flaky.id));
    const refusedWhileRunning = await running;
    expect(refusedWhileRunning.ok).toBe(false);
    expect((refusedWhileRunning as { error: unknown }).error).toBeInstanceOf(InvalidStateError);
    expect((refusedWhileRunning as { error: Error }).error.message).toBe(
      `retry: instance ${flaky.id} is a child of instance ${id}, which has already joined on its children (it is running now): a new outcome would reach no join; retry the parent instead if its join step failed`,
    );
    gates.open("join:3d");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual(["failed", "done"]);
    await expect(client.retry(flaky.id)).rejects.toThrow(/which has already joined on its children \(it is done now\)/);
    expect(await row(flaky.id)).toMatchObject({ status: "failed" });
  });
});

describe("GC and a failed parent", () => {
  it("keeps the latest spawn of a failed parent, so its retried join sees every child", async () => {
    const { id } = await engine.insert(Sum, { state: { parts: [1, 2, 3] } });
    expect((await engine.wait(id, { timeout: 10_000 })).status).toBe("failed");
    await client.prune();
    expect(await children(id)).toHaveLength(1);
    await client.retry(id);
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual({ count: 1, sum: 1000 });
  });

  it("prunes the children of a failed parent's earlier spawns", async () => {
    const { id } = await engine.insert(Sum, { state: { parts: [1, 2, 3], twice: true } });
    expect((await engine.wait(id, { timeout: 10_000 })).status).toBe("failed");
    expect(await children(id)).toHaveLength(4);
    await client.prune();
    expect(await children(id)).toHaveLength(3);
    await client.retry(id);
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual({ count: 3, sum: 60 });
  });
});

describe("the join sweep", () => {
  it(
    "serves a parent it can lock behind thousands it cannot (locked, or pruned): in order, skipping those",
    { timeout: 120_000 },
    async () => {
      // 6,000 finished children whose parents were pruned...
      await db.pool.query(
        `insert into ${s}.instances (machine, step, state, queue, status, parent_id)
       select 'Ghost', 'start', '{}', 'nowhere', 'done', -g from generate_series(1, 6000) g`,
      );
      // ...and 6,000 joining parents, each with a finished child, locked by a side connection.
      await db.pool.query(
        `with p as (
         insert into ${s}.instances (machine, step, state, queue, status, children_pending)
         select 'Ghost', 'join', '{}', 'nowhere', 'joining', 1 from generate_series(1, 6000) returning id)
       insert into ${s}.instances (machine, step, state, queue, status, parent_id)
       select 'Ghost', 'start', '{}', 'nowhere', 'done', id from p`,
      );
      const side = await sideClient(db.url);
      await side.query("begin");
      await side.query(`select 1 from ${s}.instances where machine = 'Ghost' and status = 'joining' for update`);
      try {
        const { id } = await engine.insert(Single, { state: {} });
        expect((await engine.wait(id, { timeout: 20_000 })).result).toEqual([70]);
        // The children of pruned parents are set aside, not left for every sweep to look at again.
        await eventually("the children of pruned parents to be set aside", async () => {
          const { rows } = await db.pool.query(
            `select count(*)::int as n from ${s}.instances where parent_id < 0 and not join_counted`,
          );
          return rows[0].n === 0;
        });
      } finally {
        await side.query("commit");
      }
      // 6,000 parents for the sweep, in its batches: a deadline for a loaded CI host (it took more
      // than 20 s at load average 11), not a timing.
      await eventually(
        "the ghost parents to be counted once unlocked",
        async () => {
          const { rows } = await db.pool.query(
            `select count(*)::int as n from ${s}.instances where machine = 'Ghost' and status = 'joining'`,
          );
          return rows[0].n === 0;
        },
        60_000,
      );
    },
  );
});
