// Signals and single-event await: mailbox, early signals, dedup, inbox, errors, transactions.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, InstanceTerminatedError, UnknownInstanceError, ValidationError } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

const Checkout = defineMachine({
  name: "Checkout",
  queue: "checkout",
  state: z.object({ order: z.number() }),
  steps: {
    start: (ctx) => ctx.await("payment_confirmed", "ship", ctx.state),
    ship: (ctx) =>
      ctx.done({ order: ctx.state.order, awaited: ctx.awaited.map((s) => ({ event: s.event, payload: s.payload })) }),
  },
});

// Parks after a step that first waits for the test to say go, so signals can arrive before the await.
const gates = new Map<string, () => void>();
const Gated = defineMachine({
  name: "Gated",
  queue: "checkout",
  state: z.object({ key: z.string() }),
  steps: {
    start: async (ctx) => {
      await new Promise<void>((resolve) => gates.set(ctx.state.key, resolve));
      return ctx.await("go", "second");
    },
    second: (ctx) => ctx.await("go", "third"),
    third: (ctx) => ctx.done(ctx.awaited.map((s) => s.payload)),
  },
});

// The step after the await fails once and snoozes once: both re-runs must see the same ctx.awaited.
const seen: unknown[][] = [];
const Retrying = defineMachine({
  name: "Retrying",
  queue: "other",
  state: z.object({}),
  backoff: { type: "fixed", delay: 0 },
  steps: {
    start: (ctx) => ctx.await("go", "after"),
    after: (ctx) => {
      seen.push(ctx.awaited.map((s) => s.payload));
      if (ctx.attempt === 1 && seen.length === 1) throw new Error("first run fails");
      if (seen.length === 2) return ctx.snooze(1);
      return ctx.done(ctx.awaited.map((s) => s.payload));
    },
  },
});

const engine = db.engine({ queues: { checkout: 10, other: 2 }, machines: [Checkout, Gated, Retrying] });
await engine.start();
const mailbox = async (id: string) =>
  (
    await db.pool.query(
      `select event, payload from ${db.schema}.signals where instance_id = $1 and consumed_at is null order by id`,
      [id],
    )
  ).rows;

describe("signals", () => {
  it("resumes an awaiting instance by correlation key, with the payload in ctx.awaited", async () => {
    const { id } = await engine.insert(Checkout, { state: { order: 1 }, correlationKey: "order:1" });
    await eventually("awaiting", async () => (await engine.get(id))?.status === "awaiting");
    expect((await engine.explain(id)).reasons[0]).toBe('awaiting signals: "payment_confirmed"; arrived so far: none');
    const sent = await engine.signal("order:1", "payment_confirmed", { amount: 100 });
    expect(sent).toMatchObject({ instanceId: id, duplicate: false });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.result).toEqual({ order: 1, awaited: [{ event: "payment_confirmed", payload: { amount: 100 } }] });
    expect(await mailbox(id)).toEqual([]); // consumed with the resume
  });

  it("keeps a signal that arrives before the await, and the await consumes it (and only one per await)", async () => {
    const { id } = await engine.insert(Gated, { state: { key: "early" } });
    await eventually("step running", () => gates.has("early"));
    await engine.signal({ id }, "go", 1);
    await engine.signal({ id }, "other", "ignored");
    await engine.signal({ id }, "go", 2);
    gates.get("early")!();
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.result).toEqual([2]);
    expect(await mailbox(id)).toEqual([{ event: "other", payload: "ignored" }]);
  });

  it("a retried or snoozed step after an await sees the same ctx.awaited", async () => {
    const { id } = await engine.insert(Retrying, { state: {} });
    await eventually("awaiting", async () => (await engine.get(id))?.status === "awaiting");
    await engine.signal({ id }, "go", "payload");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual(["payload"]);
    expect(seen).toEqual([["payload"], ["payload"], ["payload"]]);
  });

  it("a dedup key stores a repeated signal once", async () => {
    const { id } = await engine.insert(Gated, { state: { key: "dedup" } });
    await eventually("step running", () => gates.has("dedup"));
    const a = await engine.signal({ id }, "go", "first", { dedupKey: "hook-1" });
    const b = await engine.signal({ id }, "go", "again", { dedupKey: "hook-1" });
    expect(a.duplicate).toBe(false);
    expect(b).toMatchObject({ duplicate: true, signalId: null, instanceId: id });
    expect(await mailbox(id)).toEqual([{ event: "go", payload: "first" }]);
    gates.get("dedup")!();
    await engine.signal({ id }, "go", "second");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual(["second"]);
    // Retried after it was consumed, and even after the instance finished: still harmless.
    expect(await engine.signal({ id }, "go", "late retry", { dedupKey: "hook-1" })).toMatchObject({
      duplicate: true,
      instanceId: id,
    });
  });

  it("an unknown key or id is an UnknownInstanceError (a malformed id a ValidationError); a finished one an InstanceTerminatedError; nothing is stored", async () => {
    const before = (await db.pool.query(`select count(*)::int as n from ${db.schema}.signals`)).rows[0].n;
    await expect(engine.signal("order:none", "payment_confirmed")).rejects.toBeInstanceOf(UnknownInstanceError);
    await expect(engine.signal({ id: "99999999" }, "x")).rejects.toBeInstanceOf(UnknownInstanceError);
    await expect(engine.signal({ id: "nonsense" }, "x")).rejects.toBeInstanceOf(ValidationError);
    const { id } = await engine.insert(Checkout, { state: { order: 2 }, correlationKey: "order:2" });
    await engine.signal("order:2", "payment_confirmed");
    await engine.wait(id, { timeout: 10_000 });
    await expect(engine.signal("order:2", "payment_confirmed")).rejects.toBeInstanceOf(InstanceTerminatedError);
    await expect(engine.signal({ id }, "payment_confirmed")).rejects.toThrowError(/is already done/);
    expect((await db.pool.query(`select count(*)::int as n from ${db.schema}.signals`)).rows[0].n).toBe(before + 1); // only the valid one
  });

  it('ifMissing: "keep" holds the signal until an instance with the key is inserted', async () => {
    const kept = await engine.signal("order:early", "payment_confirmed", { amount: 5 }, { ifMissing: "keep" });
    expect(kept).toMatchObject({ instanceId: null, duplicate: false });
    const again = await engine.signal(
      "order:early",
      "payment_confirmed",
      { amount: 5 },
      { ifMissing: "keep", dedupKey: "d" },
    );
    const dup = await engine.signal(
      "order:early",
      "payment_confirmed",
      { amount: 5 },
      { ifMissing: "keep", dedupKey: "d" },
    );
    expect([again.duplicate, dup.duplicate]).toEqual([false, true]);
    const { id } = await engine.insert(Checkout, { state: { order: 3 }, correlationKey: "order:early" });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.result).toMatchObject({ awaited: [{ event: "payment_confirmed", payload: { amount: 5 } }] });
    expect(await mailbox(id)).toHaveLength(1); // the second kept signal stays in the mailbox
  });

  it("a kept signal racing the insert of its key is never stranded in the inbox (100 races)", async () => {
    // Before take_inbox serialised the two, about one race in five stranded its signal.
    const keys = Array.from({ length: 100 }, (_, i) => `racing:${i}`);
    const inserted = await Promise.all(
      keys.map(async (key, i) => {
        const [, result] = await Promise.all([
          engine.signal(key, "payment_confirmed", i, { ifMissing: "keep" }),
          engine.insert(Checkout, { state: { order: i }, correlationKey: key }),
        ]);
        return result.id;
      }),
    );
    const done = await Promise.all(inserted.map((id) => engine.wait(id, { timeout: 60_000 })));
    done.forEach((d, i) => expect(d.result).toMatchObject({ awaited: [{ payload: i }] }));
    const stranded = await db.pool.query(
      `select count(*)::int as n from ${db.schema}.signals where instance_id is null and correlation_key like 'racing:%'`,
    );
    expect(stranded.rows[0].n).toBe(0);
  });

  it("with { client }, a signal exists and wakes only if the caller's transaction commits", async () => {
    const { id } = await engine.insert(Checkout, { state: { order: 4 }, correlationKey: "order:4" });
    await eventually("awaiting", async () => (await engine.get(id))?.status === "awaiting");
    const conn = await db.pool.connect();
    try {
      await conn.query("begin");
      await engine.signal("order:4", "payment_confirmed", "rolled back", { client: conn });
      await conn.query("rollback");
      expect(await mailbox(id)).toEqual([]);
      expect((await engine.get(id))?.status).toBe("awaiting");
      await conn.query("begin");
      await engine.signal("order:4", "payment_confirmed", "committed", { client: conn });
      await conn.query("commit");
    } finally {
      conn.release();
    }
    expect((await engine.wait(id, { timeout: 10_000 })).result).toMatchObject({ awaited: [{ payload: "committed" }] });
  });

  it.each([
    ["a NUL in the payload", () => engine.signal("k", "e", { s: "\u0000" }), /payload\.s contains a NUL/],
    ["a BigInt payload", () => engine.signal("k", "e", 1n), /payload is 1n/],
    [
      "a cyclic payload",
      () => {
        const c: Record<string, unknown> = {};
        c.c = c;
        return engine.signal("k", "e", c);
      },
      /circular/,
    ],
    ["an empty event", () => engine.signal("k", ""), /event must be a non-empty string/],
    ["a bad target", () => engine.signal(42 as never, "e"), /target must be a correlation key/],
    [
      "a bad ifMissing",
      () => engine.signal("k", "e", null, { ifMissing: "drop" as never }),
      /ifMissing must be "error" or "keep"/,
    ],
    ["an unknown option", () => engine.signal("k", "e", null, { dedup: "x" } as never), /unknown option "dedup"/],
  ])("rejects %s with a ValidationError", async (_, call, message) => {
    const error = await call().then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect((error as Error).message).toMatch(message);
  });

  it("never loses a signal racing the await (200 iterations, signal 0–5 ms before the await)", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 200; i++) {
      const key = `race:${i}`;
      const { id } = await engine.insert(Gated, { state: { key } });
      ids.push(id);
      await eventually("step running", () => gates.has(key));
      const release = gates.get(key)!;
      setTimeout(release, i % 6);
      await engine.signal({ id }, "go", i);
    }
    await Promise.all(
      ids.map((id) =>
        eventually(
          `${id} at its second await`,
          async () => (await engine.get(id))?.step === "third" || (await engine.get(id))?.status === "awaiting",
        ),
      ),
    );
    for (const id of ids) await engine.signal({ id }, "go", "last");
    const results = await Promise.all(ids.map((id) => engine.wait(id, { timeout: 20_000 })));
    expect(results.every((r) => r.status === "done" && JSON.stringify(r.result) === '["last"]')).toBe(true);
  });
});
