// Join conditions: first, quorum and failFast joins resume once, cancel (or keep) the rest, and stay
// exact with children finishing concurrently and several join sweeps running at once.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, ValidationError, type SpawnOptions } from "../../src/index.js";
import { childQueries } from "../../src/sql/children.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

/** Waits for "go"; its payload "fail" fails it, anything else is its result. */
const Gate = defineMachine({
  name: "Gate",
  queue: "kids",
  maxAttempts: 1,
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.await("go", "end"),
    end: (ctx) => {
      if (ctx.awaited[0]!.payload === "fail") throw new Error("told to fail");
      return ctx.done(ctx.awaited[0]!.payload);
    },
  },
});

const joinRuns = new Map<string, number>();
const Fan = defineMachine({
  name: "Fan",
  queue: "parents",
  state: z.object({
    key: z.string(),
    n: z.number(),
    options: z.any().optional(),
    then: z.object({ n: z.number() }).optional(),
  }),
  steps: {
    start: (ctx) =>
      ctx.spawn(
        Array.from({ length: ctx.state.n }, (_, i) => ({
          machine: Gate,
          state: {},
          correlationKey: `${ctx.state.key}:${i}`,
        })),
        "joined",
        undefined,
        ctx.state.options as SpawnOptions | undefined,
      ),
    joined: (ctx) => {
      joinRuns.set(ctx.id, (joinRuns.get(ctx.id) ?? 0) + 1);
      const statuses = ctx.children.map((c) => c.status);
      const { then } = ctx.state;
      if (!then) return ctx.done(statuses);
      // A second spawn (every child), while children of the first may still run.
      const children = Array.from({ length: then.n }, (_, i) => ({
        machine: Gate,
        state: {},
        correlationKey: `${ctx.state.key}:b${i}`,
      }));
      return ctx.spawn(children, "joined", { ...ctx.state, then: undefined });
    },
  },
});

const engine = db.engine({ queues: { kids: 20, parents: 5 }, machines: [Gate, Fan], pollInterval: 50 });
await engine.start();
const q = childQueries(db.schema);

async function fan(key: string, n: number, options?: SpawnOptions, then?: { n: number }) {
  const { id } = await engine.insert(Fan, { state: { key, n, options, then } });
  await eventually(`${key} children parked`, async () => {
    const { rows } = await db.pool.query(
      `select count(*)::int as n from ${db.schema}.instances where parent_id = $1 and status = 'awaiting'`,
      [id],
    );
    return rows[0].n === n;
  });
  return id;
}
const go = (key: string, payload: unknown = "ok") => engine.signal(key, "go", payload);
const statusOf = async (key: string) => (await engine.get({ correlationKey: key }))?.status;

describe("join conditions", () => {
  it("{ quorum: 2 } resumes on the second child done and cancels the rest", async () => {
    const id = await fan("q", 4, { join: { quorum: 2 } });
    expect((await engine.explain(id)).reasons[0]).toBe(
      'joining: 4 of 4 children still live; step "joined" runs when 2 are done (or that is out of reach)',
    );
    await go("q:2");
    await eventually("q:2 done", async () => (await statusOf("q:2")) === "done");
    expect((await engine.get(id))?.status).toBe("joining");
    await go("q:0");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual(["done", "cancelled", "done", "cancelled"]);
    expect(await statusOf("q:1")).toBe("cancelled");
    expect((await engine.get({ correlationKey: "q:1" }))?.error?.message).toBe(
      `the join of instance ${id} no longer needs it`,
    );
  });

  it('"first" with remaining: "keep" resumes on the first child done and leaves the others running', async () => {
    const id = await fan("f", 3, { join: "first", remaining: "keep" });
    await go("f:1", "fail"); // a failure does not count as first
    await eventually("f:1 failed", async () => (await statusOf("f:1")) === "failed");
    expect((await engine.get(id))?.status).toBe("joining");
    await go("f:2");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual(["awaiting", "failed", "done"]);
    expect(await statusOf("f:0")).toBe("awaiting");
    await go("f:0");
    await eventually("f:0 done", async () => (await statusOf("f:0")) === "done");
    expect(joinRuns.get(id)).toBe(1);
  });

  it("{ failFast: true } resumes on the first failure and cancels the rest; all done also resumes it", async () => {
    const id = await fan("ff", 3, { join: { failFast: true } });
    await go("ff:0");
    await eventually("ff:0 done", async () => (await statusOf("ff:0")) === "done");
    await go("ff:1", "fail");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual(["done", "failed", "cancelled"]);

    const ok = await fan("ff2", 2, { join: { failFast: true } });
    await go("ff2:0");
    await go("ff2:1");
    expect((await engine.wait(ok, { timeout: 10_000 })).result).toEqual(["done", "done"]);
  });

  it("a quorum out of reach resumes the join as soon as it is", async () => {
    const id = await fan("u", 3, { join: { quorum: 2 } });
    await go("u:0", "fail");
    await eventually("u:0 failed", async () => (await statusOf("u:0")) === "failed");
    expect((await engine.get(id))?.status).toBe("joining");
    await go("u:2", "fail");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual(["failed", "cancelled", "failed"]);
  });

  it("children of an earlier spawn finishing late do not count toward the next spawn", async () => {
    const id = await fan("s", 2, { join: "first", remaining: "keep" }, { n: 2 });
    await go("s:0");
    await eventually("second spawn parked", async () => (await statusOf("s:b1")) === "awaiting");
    await go("s:1"); // a child of the first spawn
    await eventually("s:1 counted", async () => {
      const { rows } = await db.pool.query(`select join_counted from ${db.schema}.instances where id = $1`, [
        (await engine.get({ correlationKey: "s:1" }))!.id,
      ]);
      return rows[0].join_counted === true;
    });
    const parent = await db.pool.query(`select status, children_pending from ${db.schema}.instances where id = $1`, [
      id,
    ]);
    expect(parent.rows[0]).toEqual({ status: "joining", children_pending: 2 });
    await go("s:b0");
    await go("s:b1");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual(["done", "done"]);
  });

  it.each([
    ["{ quorum: 3 }", { join: { quorum: 3 } }, 3],
    ['"first"', { join: "first" }, 1],
    ["{ failFast: true }", { join: { failFast: true } }, 0],
  ] as const)(
    "%s: children finishing at once, with sweeps racing, resume each parent exactly once (15 parents × 5)",
    async (name, options, need) => {
      const tag = `r${need}`;
      const ids: string[] = [];
      for (let p = 0; p < 15; p++) ids.push(await fan(`${tag}-${p}`, 5, options as SpawnOptions));
      const signals = ids.flatMap((_, p) =>
        Array.from({ length: 5 }, (_, i) => go(`${tag}-${p}:${i}`, i === 4 ? "fail" : "ok")),
      );
      const sweeps = Array.from({ length: 6 }, () => q.sweep(db.pool, { limit: 3 }));
      await Promise.all([...signals, ...sweeps]);
      for (const id of ids) {
        const done = await engine.wait(id, { timeout: 20_000 });
        const statuses = done.result as string[];
        if (need > 0) expect(statuses.filter((s) => s === "done").length).toBeGreaterThanOrEqual(need);
        else expect(statuses.includes("failed") || statuses.every((s) => s === "done")).toBe(true);
        const history = (await engine.history(id)).map((h) => h.outcome);
        expect(history.filter((o) => o === "joined")).toHaveLength(1);
        expect(joinRuns.get(id)).toBe(1);
      }
      // Every child ends terminal and is counted once, none twice (a parent's counts stop once it is done).
      await eventually("all counted", async () => {
        const { rows } = await db.pool.query(
          `select count(*)::int as n from ${db.schema}.instances where parent_id = any($1) and not join_counted`,
          [ids],
        );
        return rows[0].n === 0;
      });
      const { rows } = await db.pool.query(
        `select children_done, children_failed from ${db.schema}.instances where id = any($1)`,
        [ids],
      );
      for (const row of rows) {
        expect(row.children_done).toBeGreaterThanOrEqual(need);
        expect(row.children_done + row.children_failed).toBeLessThanOrEqual(5);
      }
      expect(name).toBeTruthy();
    },
  );

  it("rejects bad join options: the attempt fails with a clear error", async () => {
    for (const [options, message] of [
      [{ join: { quorum: 3 } }, /join \{ quorum \} must be an integer from 1 to the number of children \(2\)/],
      [{ join: "some" }, /join must be "all", "first", \{ quorum: n \} or \{ failFast: true \}/],
      [{ remaining: "drop" }, /remaining must be "cancel" or "keep"/],
      [{ joins: "all" }, /joins/],
    ] as const) {
      const { id } = await engine.insert(Fan, {
        state: { key: `bad${String(message)}`, n: 2, options },
        maxAttempts: 1,
      });
      const failed = await engine.wait(id, { timeout: 10_000 });
      expect(failed.error?.name).toBe(ValidationError.name);
      expect(failed.error?.message).toMatch(message);
    }
  });
});
