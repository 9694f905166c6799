// Await specs beyond one event: sets, packs, and timeouts racing signals.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, ValidationError } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const state = z.object({ wait: z.string() });
const result = (ctx: { step: string; awaited: readonly { event: string; payload: unknown }[] }) =>
  ({ step: ctx.step, awaited: ctx.awaited.map((s) => `${s.event}:${String(s.payload)}`) });

const Awaiter = defineMachine({
  name: "Awaiter",
  queue: "await",
  state,
  steps: {
    start: (ctx) => {
      switch (ctx.state.wait) {
        case "all": return ctx.await({ all: ["a", "b", "c"] }, "resumed");
        case "any": return ctx.await({ any: ["a", "b"] }, "resumed");
        case "pack": return ctx.await({ event: "item", count: 3 }, "resumed");
        case "pack-timeout": return ctx.await({ event: "item", count: 3 }, "resumed", undefined, { timeout: 300, onTimeout: "late" });
        case "race": return ctx.await("go", "resumed", undefined, { timeout: 100, onTimeout: "late" });
        case "bad-timeout": return ctx.await("go", "resumed", undefined, { timeout: 100 } as never);
        default: return ctx.await({ all: [] } as never, "resumed");
      }
    },
    resumed: (ctx) => ctx.done(result(ctx)),
    late: (ctx) => ctx.done(result(ctx)),
  },
});

const engine = db.engine({ queues: { await: 10 }, machines: [Awaiter], pollInterval: 50 });
await engine.start();
const parked = (id: string) => eventually(`${id} awaiting`, async () => (await engine.get(id))?.status === "awaiting");

describe("await specs", () => {
  it("a set { all } waits for one of each, in any order, and lists them in arrival order", async () => {
    const { id } = await engine.insert(Awaiter, { state: { wait: "all" } });
    await parked(id);
    await engine.signal({ id }, "c", 1);
    await engine.signal({ id }, "a", 2);
    await engine.signal({ id }, "a", 3);
    expect((await engine.explain(id)).reasons[0]).toBe('awaiting signals: all of "a", "b", "c"; arrived so far: 2 × "a", 1 × "c"');
    expect((await engine.get(id))?.status).toBe("awaiting");
    await engine.signal({ id }, "b", 4);
    expect((await engine.wait(id, { timeout: 5000 })).result).toEqual({ step: "resumed", awaited: ["c:1", "a:2", "b:4"] });
    const left = await db.pool.query(`select event, payload from ${db.schema}.signals where instance_id = $1 and consumed_at is null`, [id]);
    expect(left.rows).toEqual([{ event: "a", payload: 3 }]);
  });

  it("a set { any } resumes on the first of them", async () => {
    const { id } = await engine.insert(Awaiter, { state: { wait: "any" } });
    await parked(id);
    await engine.signal({ id }, "z", 0);
    await engine.signal({ id }, "b", 1);
    expect((await engine.wait(id, { timeout: 5000 })).result).toEqual({ step: "resumed", awaited: ["b:1"] });
  });

  it("a pack consumes exactly count signals together", async () => {
    const { id } = await engine.insert(Awaiter, { state: { wait: "pack" } });
    for (let i = 1; i <= 4; i++) await engine.signal({ id }, "item", i); // some arrive before the await
    expect((await engine.wait(id, { timeout: 5000 })).result).toEqual({ step: "resumed", awaited: ["item:1", "item:2", "item:3"] });
  });

  it("a timeout resumes onTimeout with whatever had arrived", async () => {
    const { id } = await engine.insert(Awaiter, { state: { wait: "pack-timeout" } });
    await parked(id);
    await engine.signal({ id }, "item", 1);
    await engine.signal({ id }, "item", 2);
    expect((await engine.explain(id)).reasons[1]).toMatch(/^times out at .*, then runs step "late"$/);
    const done = await engine.wait(id, { timeout: 5000 });
    expect(done.result).toEqual({ step: "late", awaited: ["item:1", "item:2"] });
    expect((await engine.history(id)).map((h) => [h.fromStep, h.toStep, h.outcome])).toEqual([
      ["start", "resumed", "await"],
      ["resumed", "late", "timeout"],
      ["late", null, "done"],
    ]);
  });

  it("a timeout and a last signal racing resolve to exactly one of the two (100 races)", async () => {
    const ids = await Promise.all(Array.from({ length: 100 }, async () => (await engine.insert(Awaiter, { state: { wait: "race" } })).id));
    // Signal each at a moment from before its await to after its deadline.
    await Promise.all(ids.map((id, i) => new Promise<void>((resolve, reject) => {
      setTimeout(() => engine.signal({ id }, "go", i).then(() => resolve(), (e: unknown) => (e instanceof Error && /already done/.test(e.message) ? resolve() : reject(e))), (i % 25) * 10);
    })));
    const results = await Promise.all(ids.map((id) => engine.wait(id, { timeout: 10_000 })));
    const steps = results.map((r) => (r.result as { step: string }).step);
    // Both sides of the race happened, so the race itself was exercised.
    expect(steps.filter((s) => s === "resumed").length).toBeGreaterThan(0);
    expect(steps.filter((s) => s === "late").length).toBeGreaterThan(0);
    for (const [i, done] of results.entries()) {
      const r = done.result as { step: string; awaited: string[] };
      const history = await engine.history(ids[i]!);
      expect(history.filter((h) => h.outcome === "resumed" || h.outcome === "timeout")).toHaveLength(1);
      if (r.step === "resumed") expect(r.awaited).toEqual([`go:${i}`]);
      else expect(r).toEqual({ step: "late", awaited: [] });
    }
  });

  it("rejects malformed awaits: the attempt fails with a clear error", async () => {
    for (const wait of ["bad-timeout", "bad-spec"]) {
      const { id } = await engine.insert(Awaiter, { state: { wait } }, );
      await eventually(`${wait} failed`, async () => (await engine.get(id))?.error);
      const row = await engine.get(id);
      expect(row?.error?.name).toBe(ValidationError.name);
      expect(row?.error?.message).toMatch(wait === "bad-timeout" ? /needs both timeout and onTimeout/ : /needs a non-empty array of event names/);
      await engine.cancel(id);
    }
  });
});
