// Leases: renewal, fencing of late commits, the reaper, and graceful stop.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, type EngineEvents, type GenDurable } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { sideClient, waitForLockWait } from "../support/locks.js";

const db = await useTestDatabase(import.meta.url);
const state = z.object({ n: z.number() });

/** Steps that park until the test releases them, so a test can act while a step runs. */
const running = new Map<string, { release: () => void; signal: AbortSignal }>();
const hold = (id: string, signal: AbortSignal) =>
  new Promise<void>((resolve, reject) => {
    running.set(id, { release: resolve, signal });
    signal.addEventListener("abort", () => reject(signal.reason));
  });

const Held = defineMachine({
  name: "Held",
  queue: "leases",
  state,
  maxAttempts: 2,
  steps: {
    start: async (ctx) => {
      await hold(ctx.id, ctx.abortSignal);
      return ctx.next("after", { n: ctx.state.n + 1 });
    },
    after: (ctx) => ctx.done({ n: ctx.state.n, attempt: ctx.attempt }),
  },
});

const Quick = defineMachine({
  name: "Quick",
  queue: "leases",
  state,
  steps: { start: (ctx) => ctx.done(ctx.attempt) },
});

/** On a globally limited queue, whose claims take the queue's lock first. */
const Limited = defineMachine({
  name: "Limited",
  queue: "leases-global",
  state,
  steps: { start: (ctx) => ctx.done(ctx.attempt) },
});

/** Makes a row look claimed by a node that died: running, with a lease that already expired. */
async function orphan(id: string, attempt: number) {
  await db.pool.query(
    `update ${db.schema}.instances set status = 'running', attempt = $2, claim_token = claim_token + 1,
       leased_by = 'dead-node', lease_expires_at = now() - interval '1 second' where id = $1`,
    [id, attempt],
  );
}
async function stealClaim(id: string) {
  await db.pool.query(`update ${db.schema}.instances set claim_token = claim_token + 1 where id = $1`, [id]);
}

/**
 * Cancels an instance whose claim a test stole: its row stays running under a lease nobody renews,
 * and once that expires a later test's engine would reap it and run it beside its own instances.
 */
async function leaveNothingRunning(engine: GenDurable, id: string) {
  await engine.cancel(id);
  expect(await engine.get(id)).toMatchObject({ status: "cancelled" });
}

describe("leases", () => {
  it("the reaper makes an expired lease runnable again and the step re-runs", async () => {
    const client = db.engine();
    await client.start();
    const { id } = await client.insert(Quick, { state: { n: 1 } });
    await orphan(id, 1);
    const engine = db.engine({ queues: { leases: 4 }, machines: [Held, Quick], reaperInterval: 50 });
    await engine.start();
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done).toMatchObject({ status: "done", result: 2 });
    const history = await engine.history(id);
    expect(history.map((h) => h.outcome)).toEqual(["lease_expired", "done"]);
    expect(history[0]!.error?.message).toMatch(
      /attempt 1 of step "start" lost its worker dead-node: its lease expired/,
    );
    await engine.stop();
  });

  it("a step whose worker keeps dying exhausts its attempts (counted at claim) and fails", async () => {
    const engine = db.engine({ queues: { leases: 4 }, machines: [Held, Quick], reaperInterval: 50 });
    const { id } = await engine.insert(Held, { state: { n: 1 } });
    await orphan(id, 2); // maxAttempts is 2: both attempts died
    await engine.start();
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("failed");
    expect(done.error?.message).toMatch(
      /step "start" exhausted its 2 attempts; the last one: attempt 2 of step "start" lost its worker/,
    );
    expect(running.has(id)).toBe(false); // never ran again
    await engine.stop();
  });

  it("a row claimed ahead by a node that died goes back uncharged twice, then is charged like any lost step", async () => {
    // The reaper cannot tell a row that never left the dead node's buffer from one whose step ran
    // before its start was marked; forgiving that forever would let a step that kills its worker
    // run forever. This engine reaps but does not run the queue, so the row stays where it lands.
    const reaper = db.engine({ queues: { elsewhere: 1 }, machines: [], reaperInterval: 50 });
    const { id } = await db.engine().insert(Quick, { state: { n: 1 } });
    const row = async () =>
      (
        await db.pool.query<{
          status: string;
          attempt: number;
          ahead_returns: number;
          error: { message: string } | null;
        }>(`select status, attempt, ahead_returns, error from ${db.schema}.instances where id = $1`, [id])
      ).rows[0]!;
    await reaper.start();
    try {
      const seen: Array<[number, number, string | null]> = [];
      for (let round = 1; round <= 3; round++) {
        await db.pool.query(
          `update ${db.schema}.instances set status = 'running', claimed_ahead = true, claim_token = claim_token + 1,
             leased_by = 'dead-node', lease_expires_at = now() - interval '1 second' where id = $1`,
          [id],
        );
        await eventually(`reaped, round ${round}`, async () => (await row()).status === "runnable");
        const { attempt, ahead_returns, error } = await row();
        seen.push([attempt, ahead_returns, error?.message ?? null]);
      }
      expect(seen).toEqual([
        [0, 1, null],
        [0, 2, null],
        [1, 2, 'attempt 1 of step "start" lost its worker dead-node: its lease expired'],
      ]);
      expect((await reaper.history(id)).map((h) => h.outcome)).toEqual(["lease_expired"]);
    } finally {
      await reaper.stop();
    }
    // Its next outcome counts from there, and clears the count of returns.
    const node = db.engine({ queues: { leases: 4 }, machines: [Held, Quick] });
    await node.start();
    expect((await node.wait(id, { timeout: 10_000 })).result).toBe(2);
    await node.stop();
    expect(await row()).toMatchObject({ status: "done", attempt: 2, ahead_returns: 0 });
  });

  it("renews the lease while a step runs longer than the lease", async () => {
    const engine = db.engine({
      queues: { leases: 4 },
      machines: [Held, Quick],
      leaseDuration: 1000,
      reaperInterval: 50,
    });
    await engine.start();
    const { id } = await engine.insert(Held, { state: { n: 1 } });
    await eventually("step running", () => running.has(id));
    const firstExpiry = (await db.pool.query(`select lease_expires_at from ${db.schema}.instances where id = $1`, [id]))
      .rows[0].lease_expires_at;
    await eventually("lease renewed past its first expiry", async () => {
      const { rows } = await db.pool.query(
        `select lease_expires_at > $2::timestamptz + interval '1 second' as later, now() > $2::timestamptz as passed from ${db.schema}.instances where id = $1`,
        [id, firstExpiry],
      );
      return rows[0].later && rows[0].passed;
    });
    running.get(id)!.release();
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.result).toEqual({ n: 2, attempt: 1 });
    expect((await engine.history(id)).map((h) => h.outcome)).toEqual(["next", "done"]);
    await engine.stop();
  });

  it("fences a late commit: a step whose claim was taken over commits nothing and aborts", async () => {
    const engine = db.engine({ queues: { leases: 4 }, machines: [Held, Quick], leaseDuration: 1000 });
    const lost: Array<EngineEvents["lease:lost"]> = [];
    engine.on("lease:lost", (e) => lost.push(e));
    await engine.start();
    const { id } = await engine.insert(Held, { state: { n: 1 } });
    await eventually("step running", () => running.has(id));
    const { signal } = running.get(id)!;
    await stealClaim(id);
    // The next renewal finds the claim gone and aborts the step.
    await eventually("abort on lost lease", () => signal.aborted, 5000);
    expect((signal.reason as Error).name).toBe("LeaseLostError");
    await eventually("lease:lost event", () => lost.some((e) => e.id === id));
    const row = await engine.get(id);
    expect(row).toMatchObject({ status: "running", step: "start", state: { n: 1 } });
    expect(await engine.history(id)).toEqual([]);
    await leaveNothingRunning(engine, id);
    await engine.stop();
  });

  it("a late result after takeover is discarded even without an abort", async () => {
    const engine = db.engine({ queues: { leases: 4 }, machines: [Held, Quick], leaseDuration: "60s" });
    const lost: string[] = [];
    engine.on("lease:lost", (e) => lost.push(e.id));
    await engine.start();
    const { id } = await engine.insert(Held, { state: { n: 1 } });
    await eventually("step running", () => running.has(id));
    await stealClaim(id);
    running.get(id)!.release();
    await eventually("lease:lost event", () => lost.includes(id));
    expect(await engine.get(id)).toMatchObject({ status: "running", step: "start", state: { n: 1 } });
    await leaveNothingRunning(engine, id);
    await engine.stop();
  });

  it("cancel aborts a running step and discards its outcome", async () => {
    const engine = db.engine({ queues: { leases: 4 }, machines: [Held, Quick] });
    await engine.start();
    const { id } = await engine.insert(Held, { state: { n: 1 } });
    await eventually("step running", () => running.has(id));
    await engine.cancel(id, "stop it");
    expect(running.get(id)!.signal.aborted).toBe(true);
    const final = await engine.wait(id, { timeout: 5000 });
    expect(final).toMatchObject({ status: "cancelled", step: "start", state: { n: 1 }, error: { message: "stop it" } });
    await engine.stop();
  });
});

describe("graceful stop", () => {
  it("lets quick steps commit and releases unfinished ones at once, attempt not counted", async () => {
    // The grace must cover the quick step's commit on a loaded host; the stuck step holds the stop
    // for the whole grace, so it stays at 2 s rather than more. Only this test's instances count:
    // an instance another test left running could be reaped and claimed here.
    const first = db.engine({ queues: { leases: 4 }, machines: [Held, Quick], shutdownGrace: 2000 });
    await first.start();
    const finishing = await first.insert(Held, { state: { n: 10 } });
    const stuck = await first.insert(Held, { state: { n: 20 } });
    await eventually("both running", () => running.has(finishing.id) && running.has(stuck.id));
    const seen: string[] = [];
    const ours = (e: { id: string }) => e.id === finishing.id || e.id === stuck.id;
    first.on("step:released", (e) => ours(e) && seen.push(`released ${e.id}`));
    first.on("step:exception", (e) => ours(e) && seen.push(`exception ${e.id}`));
    first.on("lease:lost", (e) => ours(e) && seen.push(`lease lost ${e.id}`));
    const stopping = first.stop();
    running.get(finishing.id)!.release(); // finishes within the grace period
    await stopping;
    // Being released by a graceful stop is neither a failed attempt nor a lost lease.
    expect(seen).toEqual([`released ${stuck.id}`]);
    expect(await first.get(finishing.id).catch(() => null)).toBeNull(); // stopped engines refuse work
    const client = db.engine();
    await client.start();
    expect(await client.get(finishing.id)).toMatchObject({ status: "runnable", step: "after", state: { n: 11 } });
    expect(await client.get(stuck.id)).toMatchObject({
      status: "runnable",
      step: "start",
      attempt: 0,
      state: { n: 20 },
    });
    expect(running.get(stuck.id)!.signal.aborted).toBe(true);
    // Another node takes it over immediately, not after a lease expiry.
    running.delete(stuck.id);
    const second = db.engine({ queues: { leases: 4 }, machines: [Held, Quick] });
    await second.start();
    await eventually("re-claimed", () => running.has(stuck.id), 5000);
    running.get(stuck.id)!.release();
    expect((await second.wait(stuck.id, { timeout: 5000 })).result).toEqual({ n: 21, attempt: 1 });
    await second.stop();
  });

  it("gives back what a claim in flight at the stop claims, not leaving it leased by the stopped node", async () => {
    // A globally limited queue's claim first takes the queue's lock: held here, the claim waits.
    const side = await sideClient(db.url);
    await side.query("begin");
    await side.query("select pg_advisory_xact_lock(hashtextextended('gen_durable:queue:' || $1, 0))", [Limited.queue]);
    const node = db.engine({
      queues: { [Limited.queue]: { concurrency: 2, global: 2 } },
      machines: [Limited],
      shutdownGrace: 0,
    });
    await node.start();
    const { id } = await node.insert(Limited, { state: { n: 1 } });
    await waitForLockWait(db.pool, "the claim", ["gen_durable:queue:"]);
    const stopping = node.stop();
    // The claim goes on once stop() has begun: it takes the row for a node that is stopping.
    await side.query("commit");
    await stopping;
    const { rows } = await db.pool.query(
      `select status, attempt, leased_by from ${db.schema}.instances where id = $1`,
      [id],
    );
    expect(rows[0]).toEqual({ status: "runnable", attempt: 0, leased_by: null });
    await db.pool.query(`delete from ${db.schema}.instances where id = $1`, [id]);
  });
});
