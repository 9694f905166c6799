// Evolving machines: upcasters across a restart with instances parked at each version, the start-up check
// for instances parked at steps the definitions lack, move, and declared transitions at run time.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, InvalidStateError, ValidationError } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

// Version 1 keeps a name; version 2 splits it; version 3 adds a tier. Instances park in "wait".
const V1 = defineMachine({
  name: "Account",
  state: z.object({ name: z.string() }),
  steps: { start: (ctx) => ctx.await("go", "finish"), finish: (ctx) => ctx.done(ctx.state) },
});
const V2 = defineMachine({
  name: "Account",
  version: 2,
  state: z.object({ first: z.string(), last: z.string() }),
  migrate: {
    2: (state) => {
      const [first = "", last = ""] = (state as { name: string }).name.split(" ");
      return { first, last };
    },
  },
  steps: { start: (ctx) => ctx.await("go", "finish"), finish: (ctx) => ctx.done(ctx.state) },
});
const V3 = defineMachine({
  name: "Account",
  version: 3,
  state: z.object({ first: z.string(), last: z.string(), tier: z.string() }),
  migrate: {
    2: (state) => {
      const [first = "", last = ""] = (state as { name: string }).name.split(" ");
      return { first, last };
    },
    3: (state) => ({ ...(state as object), tier: "basic" }),
  },
  steps: {
    start: { to: ["finish"], run: (ctx) => ctx.await("go", "finish") },
    finish: (ctx) => ctx.done(ctx.state),
    wrong: { to: ["finish"], run: (ctx) => ctx.next("start" as "finish") },
  },
});

// A deploy renames "finish" to "complete": instances awaiting their way to "finish" are stranded until moved.
const Before = defineMachine({
  name: "Renamed",
  state: z.object({ name: z.string() }),
  steps: { start: (ctx) => ctx.await("go", "finish"), finish: (ctx) => ctx.done(ctx.state) },
});
const After = defineMachine({
  name: "Renamed",
  state: z.object({ name: z.string() }),
  steps: { start: (ctx) => ctx.await("go", "complete"), complete: (ctx) => ctx.done(ctx.state) },
});

async function parked(engine: ReturnType<typeof db.engine>, id: string) {
  await eventually("parked", async () => (await engine.get(id))?.status === "awaiting");
}

describe("versions", () => {
  it("upcasts instances parked at every older version when they are claimed, and records it", async () => {
    const one = db.engine({ queues: { default: 2 }, machines: [V1] });
    await one.start();
    const a = await one.insert(V1, { state: { name: "Ada Lovelace" } });
    await parked(one, a.id);
    await one.stop();

    const two = db.engine({ queues: { default: 2 }, machines: [V2] });
    await two.start();
    const b = await two.insert(V2, { state: { first: "Alan", last: "Turing" } });
    await parked(two, b.id);
    expect((await two.get(a.id))?.version).toBe(1);
    await two.stop();

    const three = db.engine({ queues: { default: 2 }, machines: [V3] });
    const errors: unknown[] = [];
    three.on("engine:error", (e) => errors.push(e));
    await three.start();
    // Both parked at "start", which V3 still has: nothing stranded.
    expect(errors).toEqual([]);
    expect(await three.check()).toEqual({ ok: true, stranded: [] });
    await three.signal({ id: a.id }, "go");
    await three.signal({ id: b.id }, "go");
    const doneA = await three.wait(a.id, { timeout: 20_000 });
    const doneB = await three.wait(b.id, { timeout: 20_000 });
    expect(doneA.result).toEqual({ first: "Ada", last: "Lovelace", tier: "basic" });
    expect(doneB.result).toEqual({ first: "Alan", last: "Turing", tier: "basic" });
    expect(doneA.version).toBe(3);
    expect((await three.history(a.id)).map((t) => t.outcome)).toContain("migrated");
    await three.stop();
  });

  it("an upcast the schema refuses fails the attempt; the state stays as it was", async () => {
    const old = db.engine({ queues: { default: 1 }, machines: [V1] });
    await old.start();
    const { id } = await old.insert(V1, { state: { name: "x" }, maxAttempts: 1 });
    await parked(old, id);
    await old.stop();
    const Broken = defineMachine({
      name: "Account",
      version: 2,
      maxAttempts: 1,
      state: z.object({ first: z.string() }),
      migrate: { 2: () => ({ first: 1 }) },
      steps: { start: (ctx) => ctx.await("go", "finish"), finish: (ctx) => ctx.done(ctx.state) },
    });
    const engine = db.engine({ queues: { default: 1 }, machines: [Broken] });
    await engine.start();
    await engine.signal({ id }, "go");
    const failed = await engine.wait(id, { timeout: 20_000 });
    expect(failed.status).toBe("failed");
    expect(failed.error?.message).toMatch(/upcast from version 1 to 2 is invalid/);
    expect(failed.state).toEqual({ name: "x" });
    expect(failed.version).toBe(1);
    await engine.stop();
  });
});

describe("start-up check and move", () => {
  it("reports instances parked at removed steps before any attempt, and move repairs them", async () => {
    const old = db.engine({ queues: { default: 2 }, machines: [Before] });
    await old.start();
    const { id } = await old.insert(Before, { state: { name: "Grace Hopper" } });
    await parked(old, id);
    await old.stop();

    const engine = db.engine({ queues: { default: 2 }, machines: [After] });
    const errors: Array<{ loop: string; error: unknown }> = [];
    engine.on("engine:error", (e) => errors.push(e));
    await engine.start();
    expect(errors).toHaveLength(1);
    expect(errors[0]!.loop).toBe("check");
    expect(String(errors[0]!.error)).toContain(`${id} (Renamed at "finish", awaiting)`);
    const report = await engine.check();
    expect(report.ok).toBe(false);
    expect(report.stranded).toEqual([{ id, machine: "Renamed", step: "finish", status: "awaiting" }]);

    await expect(engine.move(id, { step: "nowhere" })).rejects.toThrow(/has no step "nowhere"/);
    await expect(engine.move(id, { step: "complete", state: { name: 1 } })).rejects.toThrow(ValidationError);
    await engine.move(id, { step: "complete", state: { name: "Grace B. Hopper" } });
    const done = await engine.wait(id, { timeout: 20_000 });
    expect(done.result).toEqual({ name: "Grace B. Hopper" });
    const history = await engine.history(id);
    expect(history.find((t) => t.outcome === "moved")).toMatchObject({ fromStep: "finish", toStep: "complete" });
    expect((await engine.check()).ok).toBe(true);
    await expect(engine.move(id, { step: "complete" })).rejects.toThrow(InvalidStateError);
    await engine.stop();
  });

  it("the report comes before a stranded runnable instance burns an attempt", async () => {
    const Old = defineMachine({
      name: "Gone",
      state: z.object({}),
      initial: "old",
      steps: { old: (ctx) => ctx.done() },
    });
    const New = defineMachine({
      name: "Gone",
      state: z.object({}),
      maxAttempts: 1,
      steps: { start: (ctx) => ctx.done() },
    });
    // Inserted by a client that runs nothing: runnable at "old", which the next deploy no longer has.
    const client = db.engine({ machines: [] });
    await client.start();
    const { id } = await client.insert(Old, { state: {} });
    const order: string[] = [];
    const engine = db.engine({ queues: { default: 1 }, machines: [New] });
    engine.on("engine:error", (e) => order.push(`${e.loop}: ${String(e.error).includes(id) ? "lists it" : "other"}`));
    engine.on("step:exception", (e) => e.id === id && order.push(`attempt ${e.attempt} failed`));
    await engine.start();
    const failed = await engine.wait(id, { timeout: 20_000 });
    expect(failed.error?.message).toMatch(/has no step "old"/);
    expect(order).toEqual(["check: lists it", "attempt 1 failed"]);
    await engine.stop();
  });

  it("a start reads the instances again only for a definition new to the check, or after one found some stranded", async () => {
    const One = defineMachine({
      name: "Checked",
      state: z.object({}),
      steps: { start: (ctx) => ctx.await("go", "finish"), finish: (ctx) => ctx.done(ctx.state) },
    });
    const Two = defineMachine({
      name: "Checked",
      state: z.object({}),
      steps: {
        start: (ctx) => ctx.await("go", "finish"),
        finish: (ctx) => ctx.done(ctx.state),
        extra: (ctx) => ctx.done(ctx.state),
      },
    });
    // Parks an instance at a step no definition has, as a node running another definition could
    // after a check: the row is written directly.
    const strand = async (engine: ReturnType<typeof db.engine>) => {
      const { id } = await engine.insert(One, { state: {} });
      await parked(engine, id);
      await db.pool.query(`update ${db.schema}.instances set step = 'gone' where id = $1`, [id]);
      return id;
    };
    const start = async (machine: typeof One | typeof Two) => {
      const engine = db.engine({ queues: { default: 1 }, machines: [machine] });
      const reported: string[] = [];
      engine.on("engine:error", (e) => e.loop === "check" && reported.push(String(e.error)));
      await engine.start();
      return { engine, reported };
    };

    // The first start of a definition checks; nothing is stranded.
    const first = await start(One);
    expect(first.reported).toEqual([]);
    const id = await strand(first.engine);
    await first.engine.stop();
    // The same definition again: the start does not read the instances (engine.check() does).
    const same = await start(One);
    expect(same.reported).toEqual([]);
    expect((await same.engine.check()).stranded).toEqual([
      { id, machine: "Checked", step: "gone", status: "awaiting" },
    ]);
    await same.engine.stop();
    // Another definition: checked, and found.
    const changed = await start(Two);
    expect(changed.reported).toEqual([expect.stringContaining(`${id} (Checked at "gone", awaiting)`)]);
    await changed.engine.stop();
    // Found last time: checked again at every start until none is left.
    const again = await start(Two);
    expect(again.reported).toEqual([expect.stringContaining(`${id} (Checked at "gone", awaiting)`)]);
    await again.engine.move(id, { step: "finish" });
    await again.engine.wait(id, { timeout: 20_000 });
    await again.engine.stop();
    const repaired = await start(Two);
    expect(repaired.reported).toEqual([]);
    const later = await strand(repaired.engine);
    await repaired.engine.stop();
    // That check found none: the next start of the same definition skips it again.
    const skipped = await start(Two);
    expect(skipped.reported).toEqual([]);
    expect((await skipped.engine.check()).stranded).toEqual([
      { id: later, machine: "Checked", step: "gone", status: "awaiting" },
    ]);
    await skipped.engine.stop();
  });

  it("a step that declares `to` may not go elsewhere; the graph shows the declared edges", async () => {
    const engine = db.engine({ queues: { default: 2 }, machines: [V3] });
    await engine.start();
    const { id } = await engine.insert(V3, { state: { first: "a", last: "b", tier: "c" }, maxAttempts: 1 });
    await parked(engine, id);
    await engine.move(id, { step: "wrong" });
    const failed = await engine.wait(id, { timeout: 20_000 });
    expect(failed.error?.message).toMatch(/ctx.next named "start", which step "wrong" does not declare/);
    expect(V3.graph().edges).toEqual([
      { from: null, to: "start" },
      { from: "start", to: "finish" },
      { from: "wrong", to: "finish" },
    ]);
    expect(V3.toMermaid()).toContain("start --> finish");
    await engine.stop();
  });
});
