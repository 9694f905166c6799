// Child fan-out and join: atomic spawn, exactly-once join, nesting, cancellation, failures.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine, type AnyMachine, type ChildOutcome, type StepOutcome } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

const Square = defineJob({
  name: "Square",
  queue: "fanout",
  args: z.object({ n: z.number() }),
  maxAttempts: 1,
  perform: async ({ n }) => {
    if (n < 0) throw new Error(`negative: ${n}`);
    return n * n;
  },
});

const joins: Array<{ id: string; children: readonly ChildOutcome[] }> = [];
const MapReduce = defineMachine({
  name: "MapReduce",
  queue: "fanout",
  state: z.object({ items: z.array(z.number()), sum: z.number().optional() }),
  steps: {
    start: (ctx) =>
      ctx.spawn(
        ctx.state.items.map((n) => ({ machine: Square, args: { n } })),
        "reduce",
      ),
    reduce: (ctx) => {
      joins.push({ id: ctx.id, children: ctx.children });
      const ok = ctx.children.filter((c) => c.status === "done");
      return ctx.done({
        sum: ok.reduce((s, c) => s + (c.result as number), 0),
        failed: ctx.children.filter((c) => c.status === "failed").map((c) => (c.error as { message: string }).message),
        count: ctx.children.length,
      });
    },
  },
});

// A child that waits for a signal, and a parent of parents (nesting).
const Waiter = defineMachine({
  name: "Waiter",
  queue: "fanout",
  state: z.object({ key: z.string() }),
  steps: { start: (ctx) => ctx.await("go", "finish"), finish: (ctx) => ctx.done(ctx.awaited[0]!.payload) },
});
// A machine that spawns itself needs its type written down once.
const Tree: AnyMachine = defineMachine({
  name: "Tree",
  queue: "fanout",
  state: z.object({ depth: z.number(), wait: z.boolean().optional() }),
  steps: {
    start: (ctx): StepOutcome => {
      if (ctx.state.depth === 0) {
        return ctx.state.wait ? ctx.spawn([{ machine: Waiter, state: { key: ctx.id } }], "sum") : ctx.done(1);
      }
      return ctx.spawn(
        [0, 1, 2].map(() => ({ machine: Tree, state: { depth: ctx.state.depth - 1, wait: ctx.state.wait } })),
        "sum",
      );
    },
    sum: (ctx) => ctx.done(ctx.children.reduce((s, c) => s + (typeof c.result === "number" ? c.result : 0), 0)),
  },
});

const Conflict = defineMachine({
  name: "Conflict",
  queue: "fanout",
  state: z.object({}),
  maxAttempts: 1,
  steps: {
    start: (ctx) =>
      ctx.spawn(
        [
          { machine: Square, args: { n: 1 } },
          { machine: Square, args: { n: 2 }, correlationKey: "taken" },
        ],
        "join",
      ),
    join: (ctx) => ctx.done(),
  },
});

const Twice = defineMachine({
  name: "Twice",
  queue: "fanout",
  state: z.object({}),
  steps: {
    start: (ctx) =>
      ctx.spawn(
        [1, 2].map((n) => ({ machine: Square, args: { n } })),
        "again",
      ),
    again: (ctx) => ctx.spawn([{ machine: Square, args: { n: 3 } }], "end"),
    end: (ctx) => ctx.done(ctx.children.map((c) => c.result)),
  },
});

const engine = db.engine({
  queues: { fanout: 32 },
  machines: [Square, MapReduce, Waiter, Tree, Conflict, Twice],
  poolSize: 12,
});
await engine.start();

describe("fan-out", () => {
  it("spawns children, joins once, and gives ctx.children in spawn order; a failed child does not fail the parent", async () => {
    const items = [3, -1, 4, 1, -5, 9];
    const { id } = await engine.insert(MapReduce, { state: { items } });
    const done = await engine.wait(id, { timeout: 20_000 });
    expect(done.result).toEqual({ sum: 9 + 16 + 1 + 81, failed: ["negative: -1", "negative: -5"], count: 6 });
    const join = joins.filter((j) => j.id === id);
    expect(join).toHaveLength(1);
    expect(join[0]!.children.map((c) => c.machine)).toEqual(Array(6).fill("Square"));
    expect(join[0]!.children.map((c) => c.status)).toEqual(["done", "failed", "done", "done", "failed", "done"]);
    const children = await engine.list({ machine: "Square", limit: 1000 });
    expect(children.filter((c) => c.parentId === id)).toHaveLength(6);
    expect((await engine.history(id)).map((h) => h.outcome)).toEqual(["spawn", "joined", "done"]);
  });

  it("a second spawn's join sees only its own children", async () => {
    const { id } = await engine.insert(Twice, { state: {} });
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual([9]);
  });

  it("an empty spawn joins at once", async () => {
    const { id } = await engine.insert(MapReduce, { state: { items: [] } });
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual({ sum: 0, failed: [], count: 0 });
  });

  it("children spawn children (nested fan-out, 1 + 3 + 9 + 27 instances)", async () => {
    const { id } = await engine.insert(Tree, { state: { depth: 3 } });
    expect((await engine.wait(id, { timeout: 30_000 })).result).toBe(27);
  });

  it("explain counts live children; cancelling a parent cancels its live descendants", async () => {
    const { id } = await engine.insert(Tree, { state: { depth: 1, wait: true } });
    await eventually(
      "3 waiters parked",
      async () => (await engine.list({ machine: "Waiter", status: "awaiting", limit: 100 })).length >= 3,
    );
    expect((await engine.explain(id)).reasons[0]).toBe(
      'joining: 3 of 3 children still live; step "sum" runs when all have finished',
    );
    await engine.cancel(id, "abort the tree");
    const waiters = await engine.list({ machine: "Waiter", limit: 100 });
    expect(waiters.length).toBeGreaterThanOrEqual(3);
    expect(waiters.every((w) => w.status === "cancelled")).toBe(true);
    const middle = await engine.list({ machine: "Tree", status: "cancelled", limit: 100 });
    expect(middle.filter((m) => m.parentId === id)).toHaveLength(3);
    expect((await engine.get(id))?.status).toBe("cancelled");
  });

  it("a child that awaits a signal holds the join until it is signalled", async () => {
    const { id } = await engine.insert(Tree, { state: { depth: 0, wait: true } });
    const waiter = await eventually("waiter parked", async () =>
      (await engine.list({ machine: "Waiter", status: "awaiting", limit: 10 })).find(
        (w) => w.state && (w.state as { key: string }).key === id,
      ),
    );
    await engine.signal({ id: waiter.id }, "go", 5);
    expect((await engine.wait(id, { timeout: 10_000 })).result).toBe(5);
  });

  it("a child's correlation key that is taken fails the spawn attempt and inserts no child", async () => {
    const holder = await engine.insert(Waiter, { state: { key: "x" }, correlationKey: "taken" });
    const { id } = await engine.insert(Conflict, { state: {} });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("failed");
    expect(done.error?.message).toMatch(
      /ctx\.spawn: the correlation key "taken" of a child already names a live instance; no child was inserted/,
    );
    expect((await engine.list({ limit: 10_000 })).filter((i) => i.parentId === id)).toEqual([]);
    await engine.cancel(holder.id);
  });

  it("joins 10,000 children exactly once", async () => {
    const items = Array.from({ length: 10_000 }, (_, i) => i % 100);
    const { id } = await engine.insert(MapReduce, { state: { items } });
    const done = await engine.wait(id, { timeout: 120_000 });
    expect(done.result).toEqual({
      sum: 100 * items.slice(0, 100).reduce((s, n) => s + n * n, 0),
      failed: [],
      count: 10_000,
    });
    expect(joins.filter((j) => j.id === id)).toHaveLength(1);
    expect((await engine.history(id)).filter((h) => h.outcome === "joined")).toHaveLength(1);
  }, 180_000);

  it("joins 100 parents × 100 children running concurrently", async () => {
    const parents = await engine.insertMany(
      Array.from({ length: 100 }, (_, p) => ({
        machine: MapReduce,
        state: { items: Array.from({ length: 100 }, () => p) },
      })),
    );
    const results = await Promise.all(parents.map((p) => engine.wait(p.id, { timeout: 170_000 })));
    results.forEach((r, p) => expect(r.result).toEqual({ sum: 100 * p * p, failed: [], count: 100 }));
    for (const p of parents) expect(joins.filter((j) => j.id === p.id)).toHaveLength(1);
  }, 180_000);
});
