// Scenario 10: signals that land before their await is committed are never lost; signals to unknown
// and terminal targets are refused as docs/signals.md says; kept signals expire and are collected.
// RELIABILITY_FULL=1 runs 10,000 races instead of 1,000.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, InstanceTerminatedError, UnknownInstanceError } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const RACES = process.env.RELIABILITY_FULL === "1" ? 10_000 : 1_000;
const db = await useTestDatabase(import.meta.url);
const S = `"${db.schema}"`;

const client = db.engine({ poolSize: 10 });

/**
 * How the signal races the await: sent and committed inside the step before it returns ctx.await
 * ("before"); sent as the step returns, racing the await's commit ("racing"); sent by an outside
 * sender as soon as the step has started, 0–4 ms later ("outside").
 */
type Race = "before" | "racing" | "outside";
const RACE_KINDS: Race[] = ["before", "racing", "outside"];
const started = new Map<string, () => void>();
const racing: Array<Promise<unknown>> = [];

const Racer = defineMachine({
  name: "Racer",
  queue: "races",
  state: z.object({ race: z.enum(["before", "racing", "outside"]), pause: z.number() }),
  steps: {
    start: async (ctx) => {
      if (ctx.state.race === "before") await client.signal({ id: ctx.id }, "go", ctx.id);
      if (ctx.state.race === "racing") racing.push(client.signal({ id: ctx.id }, "go", ctx.id));
      if (ctx.state.race === "outside") {
        started.get(ctx.id)?.();
        await new Promise((resolve) => setTimeout(resolve, ctx.state.pause));
      }
      return ctx.await("go", "finish");
    },
    finish: (ctx) => ctx.done(ctx.awaited.map((s) => s.payload)),
  },
});

const Waiter = defineMachine({
  name: "Waiter",
  queue: "races",
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.await("go", "finish", undefined, { timeout: "1h", onTimeout: "finish" }),
    finish: (ctx) => ctx.done(ctx.awaited.length),
  },
});

const worker = db.engine({ queues: { races: 50 }, machines: [Racer, Waiter], poolSize: 20 });
await client.start();
await worker.start();

async function signalCount(): Promise<number> {
  const { rows } = await db.pool.query(`select count(*)::int as n from ${S}.signals`);
  return rows[0].n;
}

describe("signal-before-await races", () => {
  it(`loses none of ${RACES.toLocaleString("en")} signals that land before or while their await commits`, async () => {
    const t0 = performance.now();
    const ids: string[] = [];
    const batch = 500;
    for (let from = 0; from < RACES; from += batch) {
      const items = Array.from({ length: Math.min(batch, RACES - from) }, (_, k) => ({
        machine: Racer,
        state: { race: RACE_KINDS[(from + k) % 3]!, pause: (from + k) % 5 },
      }));
      // Registered before the insert commits: the step may start at once.
      const gates = new Map<number, Promise<void>>();
      const inserted = await client.insertMany(items);
      const outside = inserted.filter((_, k) => items[k]!.state.race === "outside");
      for (const [k, { id }] of outside.entries()) {
        if (!started.has(id)) gates.set(k, new Promise<void>((resolve) => started.set(id, resolve)));
      }
      await Promise.all(
        outside.map(async ({ id }, k) => {
          // A step that started before its gate existed is past that point already: send now.
          await Promise.race([
            gates.get(k),
            eventually(`${id} claimed`, async () => (await client.get(id))?.status !== "runnable"),
          ]);
          await client.signal({ id }, "go", id);
        }),
      );
      ids.push(...inserted.map((r) => r.id));
    }
    const results = await Promise.all(ids.map((id) => client.wait(id, { timeout: 120_000 })));
    await Promise.all(racing);
    const lost = results.filter((r, i) => r.status !== "done" || JSON.stringify(r.result) !== JSON.stringify([ids[i]]));
    const seconds = (performance.now() - t0) / 1000;
    console.log(
      `${RACES} races (${RACE_KINDS.join(", ")}: a third each): ${lost.length} lost, ` +
        `${results.length - lost.length} resumed with their signal, in ${seconds.toFixed(1)} s`,
    );
    expect(lost).toEqual([]);
  }, 600_000);
});

describe("unknown and terminal targets", () => {
  it("a signal to an unknown key or id is an UnknownInstanceError and stores nothing", async () => {
    const before = await signalCount();
    await expect(client.signal("no-such-key", "go")).rejects.toBeInstanceOf(UnknownInstanceError);
    await expect(client.signal({ id: "999999999" }, "go")).rejects.toBeInstanceOf(UnknownInstanceError);
    await expect(client.signal({ id: "999999999" }, "go", null, { ifMissing: "keep" })).rejects.toBeInstanceOf(
      UnknownInstanceError,
    );
    expect(await signalCount()).toBe(before);
  });

  it("a signal to a done or cancelled instance is an InstanceTerminatedError and stores nothing", async () => {
    const { id: done } = await client.insert(Waiter, { state: {}, correlationKey: "terminal:done" });
    await client.signal({ id: done }, "go");
    expect((await client.wait(done, { timeout: 30_000 })).status).toBe("done");
    const { id: cancelled } = await client.insert(Waiter, { state: {} });
    await client.cancel(cancelled);
    const before = await signalCount();
    for (const id of [done, cancelled]) {
      await expect(client.signal({ id }, "go")).rejects.toBeInstanceOf(InstanceTerminatedError);
    }
    // By key, its newest instance is terminal: refused the same way, or kept for the key's next instance.
    await expect(client.signal("terminal:done", "go")).rejects.toBeInstanceOf(InstanceTerminatedError);
    expect(await signalCount()).toBe(before);
    const kept = await client.signal("terminal:done", "go", null, { ifMissing: "keep" });
    expect(kept.instanceId).toBeNull();
    expect(await signalCount()).toBe(before + 1);
  });
});

describe("kept signals expire and are collected", () => {
  it("a kept signal past signalRetention is not handed over, and the reaper deletes it", async () => {
    // No reaper yet (interval of an hour): expiry alone must stop the hand-over.
    const sender = db.engine({ signalRetention: "1s", reaperInterval: "1h" });
    await sender.start();
    const kept = 20;
    for (let i = 0; i < kept; i++) await sender.signal(`expiring:${i}`, "go", i, { ifMissing: "keep" });
    await sender.signal("fresh", "go", "fresh", { ifMissing: "keep" });
    const fresh = await client.insert(Waiter, { state: {}, correlationKey: "fresh" });
    expect((await client.wait(fresh.id, { timeout: 30_000 })).result).toBe(1);
    // Every kept one expired (by database time), or already deleted by another engine's reaper.
    await eventually(
      "the kept signals to expire (database time)",
      async () =>
        (
          await db.pool.query(
            `select count(*)::int as n from ${S}.signals
             where instance_id is null and correlation_key like 'expiring:%' and expires_at >= now()`,
          )
        ).rows[0].n === 0,
    );
    const late = await client.insert(Waiter, { state: {}, correlationKey: "expiring:0" });
    await eventually("the late instance to park", async () => (await client.get(late.id))?.status === "awaiting");
    const { rows: handed } = await db.pool.query(`select count(*)::int as n from ${S}.signals where instance_id = $1`, [
      late.id,
    ]);
    expect(handed[0].n).toBe(0);
    const collector = db.engine({ signalRetention: "1s", reaperInterval: "100ms" });
    await collector.start();
    const t0 = performance.now();
    await eventually(
      "the reaper to delete expired inbox signals",
      async () =>
        (
          await db.pool.query(
            `select count(*)::int as n from ${S}.signals where instance_id is null and correlation_key like 'expiring:%'`,
          )
        ).rows[0].n === 0,
    );
    console.log(
      `${kept} kept signals expired unclaimed; the reaper deleted them ` +
        `${Math.round(performance.now() - t0)} ms after starting; an instance inserted after expiry got none`,
    );
    await client.cancel(late.id);
  });
});
