// Composite await specs: alternatives of packs and sets, matched under concurrent signals and timeouts.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, InstanceTerminatedError, ValidationError } from "../../src/index.js";
import { matchSpec, normalizeSpec } from "../../src/runtime/await-spec.js";
import { fireTimeouts } from "../../src/runtime/signals.js";
import { signalQueries } from "../../src/sql/signals.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { outcome } from "../support/locks.js";

const db = await useTestDatabase(import.meta.url);

const Approval = defineMachine({
  name: "Approval",
  queue: "composite",
  state: z.object({ bad: z.boolean().optional() }),
  steps: {
    start: (ctx) =>
      ctx.state.bad
        ? ctx.await({ any: [{ event: "approve", count: 0 }, "reject"] }, "decide")
        : ctx.await({ any: [{ event: "approve", count: 2 }, "reject"] }, "decide", undefined, {
            timeout: "1h",
            onTimeout: "decide",
          }),
    decide: (ctx) => ctx.done(ctx.awaited.map((s) => `${s.event}:${String(s.payload)}`)),
  },
});

const engine = db.engine({ queues: { composite: 10 }, machines: [Approval], pollInterval: 50 });
await engine.start();
const parked = (id: string) => eventually(`${id} awaiting`, async () => (await engine.get(id))?.status === "awaiting");
const spec = normalizeSpec({ any: [{ event: "approve", count: 2 }, "reject"] }, "test");
const signals = (...events: string[]) => events.map((event, i) => ({ event, i }));

describe("composite await specs", () => {
  it("match the branch that completed first, consuming only what it needs", () => {
    expect(spec).toMatchObject({ mode: "tree", events: ["approve", "reject"] });
    expect(matchSpec(spec, signals("approve"))).toBeNull();
    expect(matchSpec(spec, signals("approve", "approve", "reject"))).toEqual(signals("approve", "approve"));
    expect(matchSpec(spec, signals("approve", "reject", "approve"))).toEqual([{ event: "reject", i: 1 }]);
    const both = normalizeSpec({ all: [{ event: "a", count: 2 }, { any: ["b", "c"] }] }, "test");
    expect(matchSpec(both, signals("a", "c", "b", "a", "a"))).toEqual([
      { event: "a", i: 0 },
      { event: "c", i: 1 },
      { event: "a", i: 3 },
    ]);
    // Two leaves of one event in a set need that many of it.
    const twice = normalizeSpec(
      {
        all: [
          { event: "a", count: 1 },
          { event: "a", count: 2 },
        ],
      },
      "test",
    );
    expect(matchSpec(twice, signals("a", "a"))).toBeNull();
    expect(matchSpec(twice, signals("a", "a", "a"))).toHaveLength(3);
    // Flat specs keep their stored form.
    expect(normalizeSpec({ any: ["a", "b"] }, "test")).toEqual({ mode: "any", events: ["a", "b"], count: 1 });
  });

  it("two approvals resume it, with both in ctx.awaited", async () => {
    const { id } = await engine.insert(Approval, { state: {} });
    await parked(id);
    await engine.signal({ id }, "approve", 1);
    expect((await engine.explain(id)).reasons[0]).toBe(
      'awaiting signals: any of (2 × "approve", "reject"); arrived so far: 1 × "approve"',
    );
    await engine.signal({ id }, "approve", 2);
    expect((await engine.wait(id, { timeout: 5000 })).result).toEqual(["approve:1", "approve:2"]);
  });

  it("one rejection resumes it", async () => {
    const { id } = await engine.insert(Approval, { state: {} });
    await parked(id);
    await engine.signal({ id }, "approve", 1);
    await engine.signal({ id }, "reject", 2);
    expect((await engine.wait(id, { timeout: 5000 })).result).toEqual(["reject:2"]);
  });

  it("concurrent signals resume each instance exactly once, consuming exactly what matched (50 instances)", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 50; i++) ids.push((await engine.insert(Approval, { state: {} })).id);
    for (const id of ids) await parked(id);
    await Promise.all(
      ids.flatMap((id) => [
        engine.signal({ id }, "approve", "a1"),
        engine.signal({ id }, "approve", "a2"),
        engine.signal({ id }, "reject", "r"),
        engine.signal({ id }, "approve", "a3"),
      ]),
    );
    for (const id of ids) {
      const done = await engine.wait(id, { timeout: 10_000 });
      const awaited = done.result as string[];
      expect(awaited.length === 1 ? awaited : awaited.map((s) => s.split(":")[0])).toEqual(
        awaited.length === 1 ? ["reject:r"] : ["approve", "approve"],
      );
      const history = (await engine.history(id)).map((h) => h.outcome);
      expect(history.filter((o) => o === "resumed")).toHaveLength(1);
      const consumed = await db.pool.query(
        `select count(*)::int as n from ${db.schema}.signals where instance_id = $1 and consumed_at is not null`,
        [id],
      );
      expect(consumed.rows[0].n).toBe(awaited.length);
    }
  });

  it("a timeout racing the last signals resolves to one of the two, with what had arrived", async () => {
    const q = signalQueries(db.schema);
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push((await engine.insert(Approval, { state: {} })).id);
    for (const id of ids) await parked(id);
    for (const id of ids) await engine.signal({ id }, "approve", "first");
    await db.pool.query(`update ${db.schema}.instances set run_at = now() - interval '1 second' where id = any($1)`, [
      ids,
    ]);
    const [, seconds] = await Promise.all([
      fireTimeouts(db.pool, q, 5),
      Promise.all(ids.map((id) => outcome(engine.signal({ id }, "approve", "second")))),
      fireTimeouts(db.pool, q, 5),
    ]);
    while ((await fireTimeouts(db.pool, q, 100)).length > 0);
    for (const [i, id] of ids.entries()) {
      const done = await engine.wait(id, { timeout: 10_000 });
      const outcomes = (await engine.history(id)).map((h) => h.outcome);
      expect(outcomes.filter((o) => o === "timeout" || o === "resumed")).toHaveLength(1);
      if (outcomes.includes("timeout")) {
        expect(done.result).toEqual(["approve:first"]);
        // The late signal is stored for the instance resumed by its timeout, or, when the step
        // after the timeout has already finished it, refused as sent to a finished instance.
        const second = seconds[i]!;
        if (!second.ok) expect(second.error).toBeInstanceOf(InstanceTerminatedError);
      } else {
        expect(done.result).toEqual(["approve:first", "approve:second"]);
        expect(seconds[i]!.ok).toBe(true);
      }
    }
  });

  it("a malformed composite spec fails the attempt with a clear error", async () => {
    const { id } = await engine.insert(Approval, { state: { bad: true } });
    await eventually("failed", async () => (await engine.get(id))?.error);
    const row = await engine.get(id);
    expect(row?.error?.name).toBe(ValidationError.name);
    expect(row?.error?.message).toMatch(/a pack \{ event, count \} needs an integer count from 1/);
    await engine.cancel(id);
  });
});
