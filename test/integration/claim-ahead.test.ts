// The claim-ahead buffer: sized by the node's pace, given back when its rows wait too long, and
// drawing rate-limit tokens for its rows before a slot is free.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, type EngineEvents, type GenDurable } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { claimedAhead, givenBack } from "../support/buffer.js";
import { sideClient, terminateLockWaiters, waitForLockWait } from "../support/locks.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

/** Hangs until the test lets it go (or its engine stops). */
let letGo: () => void = () => {};
const Hangs = defineJob({
  name: "Hangs",
  queue: "ahead",
  args: z.object({}),
  perform: async (_args, ctx) => {
    await new Promise<void>((resolve, reject) => {
      letGo = resolve;
      ctx.abortSignal.addEventListener("abort", () => reject(ctx.abortSignal.reason));
    });
  },
});
const Quick = defineJob({ name: "Quick", queue: "ahead", args: z.object({ n: z.number() }), perform: (a) => a.n });
/** Counts the runs of its code. */
let recordedRuns = 0;
const Recorded = defineJob({
  name: "Recorded",
  queue: "ahead",
  args: z.object({}),
  perform: () => {
    recordedRuns++;
    return null;
  },
});

/** Steps whose code runs now in queue "early", and the most seen at once. */
const inCode = { now: 0, most: 0 };
async function counted<T>(run: () => Promise<T> | T): Promise<T> {
  inCode.most = Math.max(inCode.most, ++inCode.now);
  try {
    return await run();
  } finally {
    inCode.now--;
  }
}
/** No rate limit: quick steps that set the node's pace. */
const Paced = defineJob({
  name: "Paced",
  queue: "early",
  args: z.object({ n: z.number() }),
  perform: (a) => counted(() => a.n),
});
/** Rate-limited: hangs while `tappedHang` is set (until its engine stops), else returns at once. */
let tappedHang = true;
const hanging = new Set<() => void>();
const Tapped = defineJob({
  name: "Tapped",
  queue: "early",
  args: z.object({ n: z.number() }),
  rateLimit: { name: "tap" },
  perform: (a, ctx) =>
    counted(async () => {
      if (!tappedHang) return a.n;
      await new Promise<void>((resolve, reject) => {
        hanging.add(resolve);
        ctx.abortSignal.addEventListener("abort", () => {
          hanging.delete(resolve);
          reject(ctx.abortSignal.reason);
        });
      });
      return a.n;
    }),
});
/** Refills one token an hour: what the bucket lacks of its burst is what was drawn. */
const BURST = 100_000;
const rateLimits = { tap: { limit: 1, period: "1h", burst: BURST } } as const;

/** Starts a node "second" that runs the Quick jobs `ids` (args n = 1, 2, 3…): each once, there. */
async function runOnceOnSecond(client: GenDurable, ids: readonly string[]): Promise<void> {
  const second = db.engine({ queues: { ahead: 2 }, machines: [Hangs, Quick], nodeId: "second", poolSize: 3 });
  const startedOn: string[] = [];
  second.on("step:start", (e) => void startedOn.push(e.id));
  await second.start();
  try {
    for (const [k, id] of ids.entries()) expect((await client.wait(id, { timeout: 10_000 })).result).toBe(k + 1);
    expect(startedOn.sort()).toEqual([...ids].sort());
  } finally {
    await second.stop();
  }
}

describe("the claim-ahead buffer", () => {
  it("claims short steps in batches well beyond the concurrency", async () => {
    const JOBS = 3_000;
    const client = db.engine({ poolSize: 2 });
    for (let i = 0; i < JOBS; i += 1_000)
      await client.insertMany(Array.from({ length: 1_000 }, (_, k) => ({ machine: Quick, args: { n: i + k } })));
    const node = db.engine({ queues: { ahead: 2 }, machines: [Hangs, Quick], poolSize: 3 });
    const claimed: number[] = [];
    node.on("loop:tick", (e: EngineEvents["loop:tick"]) => {
      if (e.loop === "scheduler" && e.count !== undefined) claimed.push(e.count);
    });
    await node.start();
    try {
      await eventually(
        "all done",
        async () =>
          (await db.pool.query(`select count(*)::int as n from ${s}.instances where status = 'done'`)).rows[0].n ===
          JOBS,
        60_000,
      );
    } finally {
      await node.stop();
    }
    // The buffer held only the concurrency's worth before (claims of at most 2 × 2 rows); now it
    // holds about 50 ms of work at the node's pace, even on a slow host far more than that.
    expect(Math.max(...claimed)).toBeGreaterThan(4);
    const { rows } = await db.pool.query(
      `select attempt, count(*)::int as n from ${s}.instances where machine = 'Quick' group by 1`,
    );
    expect(rows).toEqual([{ attempt: 1, n: JOBS }]);
    await db.pool.query(`delete from ${s}.instances`);
  });

  it("gives back rows that waited a second behind a step that hangs, and another node runs them", async () => {
    const client = db.engine({ poolSize: 2 });
    const hung = await client.insert(Hangs, { args: {} });
    const first = db.engine({ queues: { ahead: 1 }, machines: [Hangs, Quick], nodeId: "first", poolSize: 3 });
    await first.start();
    try {
      await eventually("the hanging step running", async () => (await client.get(hung.id))?.status === "running");
      const ids = (await client.insertMany([1, 2, 3].map((n) => ({ machine: Quick, args: { n } })))).map((r) => r.id);
      // Claimed ahead by the first node, whose only slot hangs.
      await claimedAhead(db, ids, "first", 1);
      // Given back after about a second: runnable, uncharged, leased by nobody.
      await givenBack(db, ids, 3);
      await runOnceOnSecond(client, ids);
      for (const id of ids) expect((await client.history(id)).map((t) => t.outcome)).toEqual(["done"]);
      expect((await client.get(hung.id))?.status).toBe("running");
      letGo();
      expect((await client.wait(hung.id, { timeout: 10_000 })).status).toBe("done");
    } finally {
      await first.stop();
    }
  });
});

describe("an attempt aborted while its row waits in the buffer", () => {
  it("never runs its code: a row cancelled there is not started when a slot frees", async () => {
    const client = db.engine({ poolSize: 2 });
    const node = db.engine({ queues: { ahead: 1 }, machines: [Hangs, Recorded], nodeId: "aborts", poolSize: 3 });
    const lost: string[] = [];
    node.on("lease:lost", (e) => void lost.push(e.id));
    const hung = await client.insert(Hangs, { args: {} });
    await node.start();
    try {
      await eventually("the hanging step running", async () => (await client.get(hung.id))?.status === "running");
      const { id } = await client.insert(Recorded, { args: {} });
      // Claimed ahead by the node, whose only slot hangs; cancelled there (its attempt aborted).
      await claimedAhead(db, [id], "aborts", 1);
      await node.cancel(id);
      letGo();
      await eventually("the buffered row's attempt given up", async () => lost.includes(id));
      expect(recordedRuns).toBe(0);
      expect((await client.get(id))?.status).toBe("cancelled");
      expect((await client.wait(hung.id, { timeout: 10_000 })).status).toBe("done");
    } finally {
      await node.stop();
    }
  });
});

describe("a give-back that fails", () => {
  it("leaves the rows to their lease: the reaper hands them out uncharged, and they run once", async () => {
    const client = db.engine({ poolSize: 2 });
    const hung = await client.insert(Hangs, { args: {} });
    const first = db.engine({
      queues: { ahead: 1 },
      machines: [Hangs, Quick],
      nodeId: "first",
      poolSize: 3,
      leaseDuration: "2s",
      reaperInterval: 50,
    });
    const errors: Array<EngineEvents["engine:error"]> = [];
    first.on("engine:error", (e) => void errors.push(e));
    await first.start();
    try {
      await eventually("the hanging step running", async () => (await client.get(hung.id))?.status === "running");
      const ids = (await client.insertMany([1, 2, 3].map((n) => ({ machine: Quick, args: { n } })))).map((r) => r.id);
      await claimedAhead(db, ids, "first", 1);
      // The give-back a second later waits for the row's lock, held here; its connection then dies.
      const side = await sideClient(db.url);
      await side.query("begin");
      await side.query(`select id from ${s}.instances where id = any($1) and leased_by = 'first' for update`, [ids]);
      // This schema's give-back only: other test files' engines on the server run the same statement.
      const release = [`update ${s}.instances i`, "set status = 'runnable', run_at = case when i.claimed_ahead"];
      await waitForLockWait(db.pool, "the give-back", release);
      expect(await terminateLockWaiters(db.pool, release)).toBe(1);
      await eventually("the failure reported", () => errors.some((e) => e.loop === "scheduler:ahead"));
      await side.query("rollback");
      // Forgotten by the node, not renewed: once its lease expires the reaper gives it back, uncharged.
      await eventually("reaped", async () => {
        const { rows } = await db.pool.query(
          `select count(*)::int as n from ${s}.instances
           where id = any($1) and status = 'runnable' and attempt = 0 and ahead_returns = 1 and leased_by is null`,
          [ids],
        );
        return rows[0].n === 1;
      });
      await runOnceOnSecond(client, ids);
      letGo();
      expect((await client.wait(hung.id, { timeout: 10_000 })).status).toBe("done");
    } finally {
      await first.stop();
    }
  });
});

describe("rate-limited rows claimed ahead", () => {
  const PACED = 400;
  const TAPPED = 100;
  /**
   * The node's concurrency. Rows draw ahead as many as the node starts in about 10 ms at its pace:
   * the quick steps before the rate-limited ones make that pace high even on a loaded host.
   */
  const SLOTS = 8;

  /**
   * Quick steps first, then rate-limited steps that hang in every slot: the rate-limited rows
   * claimed ahead behind them draw their tokens and wait for a slot.
   */
  async function drawnAhead(nodeId: string) {
    tappedHang = true;
    await db.pool.query(`delete from ${s}.instances; delete from ${s}.rate_limit_buckets`);
    const client = db.engine({ poolSize: 2, rateLimits });
    await client.insertMany(Array.from({ length: PACED }, (_, n) => ({ machine: Paced, args: { n } })));
    await client.insertMany(Array.from({ length: TAPPED }, (_, n) => ({ machine: Tapped, args: { n } })));
    const node = db.engine({
      queues: { early: SLOTS },
      machines: [Paced, Tapped],
      nodeId,
      poolSize: 3,
      rateLimits,
      shutdownGrace: 0,
    });
    const started: string[] = [];
    node.on("step:start", (e) => void (e.machine === "Tapped" && started.push(e.id)));
    inCode.most = 0;
    await node.start();
    const drawn = async () => BURST - Math.round((await client.rateLimitBuckets("tap"))[0]?.tokens ?? BURST);
    // More tokens drawn than rate-limited steps started: rows drew theirs while every slot hangs.
    await eventually(
      "rows drawing ahead of a slot",
      async () => hanging.size === SLOTS && (await drawn()) > started.length,
    );
    return { client, node, started, drawn };
  }

  /** Rate-limited rows that are runnable, uncharged and leased by nobody. */
  async function unstarted(): Promise<number> {
    const { rows } = await db.pool.query(
      `select count(*)::int as n from ${s}.instances
       where machine = 'Tapped' and status = 'runnable' and attempt = 0 and leased_by is null and not claimed_ahead`,
    );
    return rows[0].n;
  }

  it("never runs more steps than the concurrency, and a stop gives the waiting rows back at once", async () => {
    const { node, started } = await drawnAhead("early-stop");
    const errors: unknown[] = [];
    node.on("engine:error", (e) => void errors.push(e.error));
    await node.stop();
    // Nothing of the stop waited out its bound (a row left waiting for a slot would, for a lease).
    expect(errors).toEqual([]);
    expect(inCode.most).toBe(SLOTS);
    expect(started.length).toBe(SLOTS);
    // Released by the stop, not left leased until their lease expires: those that drew ahead, and
    // those that hung (their attempt refunded).
    expect(await unstarted()).toBe(TAPPED);
  });

  it("gives back rows that waited a second for a slot, their tokens spent; another node runs them once", async () => {
    const { client, node, started, drawn } = await drawnAhead("early-slow");
    try {
      // Refused a slot after a second behind the hanging steps: runnable, uncharged, leased by nobody.
      await eventually("given back", async () => (await unstarted()) === TAPPED - SLOTS, 10_000);
      // The tokens they drew are spent: a limit is never exceeded by rows that did not run.
      expect(await drawn()).toBeGreaterThan(started.length);
      tappedHang = false;
      const second = db.engine({
        queues: { early: 4 },
        machines: [Paced, Tapped],
        nodeId: "early-second",
        poolSize: 3,
        rateLimits,
      });
      const ran: string[] = [];
      second.on("step:start", (e) => void (e.machine === "Tapped" && ran.push(e.id)));
      await second.start();
      try {
        await eventually("the rest done", async () => {
          const { rows } = await db.pool.query(`select count(*)::int as n from ${s}.instances where status = 'done'`);
          return rows[0].n === PACED + TAPPED - SLOTS;
        });
        expect(new Set([...started, ...ran]).size).toBe(TAPPED);
        expect(ran.length).toBe(TAPPED - SLOTS);
      } finally {
        await second.stop();
      }
    } finally {
      for (const resolve of hanging) resolve();
      hanging.clear();
      await node.stop();
    }
    expect((await client.rateLimitBuckets("tap"))[0]).toBeDefined();
  });
});
