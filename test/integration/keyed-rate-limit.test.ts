/**
 * A keyed, rate-limited queue delivers its limit. Two engines (queues:
 * { default: 20 }) run a job keyed over 50 keys that draws from one bucket of
 * 100/s (burst 20) and works 20–80 ms:
 *   - beside unkeyed work of lower priority inserted faster than the nodes can
 *     run it, so every slot that frees is wanted and each node's claim-ahead
 *     buffer stays full: the keyed job, more urgent and due, must still run at
 *     its limit (it used to run only when a node's buffer ran dry: never);
 *   - alone, draining a backlog: at its limit, and a short bucket costs one
 *     postponement per run (its tokens are set aside for its turn), not a
 *     claim/postpone cycle every ~10 ms while it waits.
 * Figures (runs/s, postponements) are printed. The rate assertions leave wide margins: CI runs
 * this file beside others on two cores. The defects they catch ran well below them: the keyed job
 * beside busy work ran only when a buffer ran dry (about 0–48/s), and a drain postponed each run
 * about 8 times (on a loaded machine under once on average, but 9–13 times for its unluckiest run).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, type GenDurable } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

const LIMIT = 100;
const BURST = 20;
const KEYS = 50;

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const Keyed = defineJob({
  name: "KeyedLimited",
  args: z.object({ n: z.number() }),
  rateLimit: { name: "shared" },
  perform: async () => sleep(20 + Math.random() * 60),
});

const Filler = defineJob({
  name: "Filler",
  args: z.object({}),
  perform: async () => sleep(50 + Math.random() * 100),
});

const rateLimits = { shared: { limit: LIMIT, period: "1s", burst: BURST } };
const nodes = ["krl-a", "krl-b"].map((nodeId) =>
  db.engine({
    queues: { default: 20 },
    machines: [Keyed, Filler],
    rateLimits,
    nodeId,
    leaseDuration: "5s",
    pollInterval: "1s",
  }),
);
const client = db.engine({ rateLimits });

/** performance.now() of every keyed step start, and every postponement (with its instance). */
const starts: number[] = [];
const started = new Set<string>();
const postponed: Array<{ at: number; id: string }> = [];

beforeAll(async () => {
  for (const node of nodes) {
    node.on("step:start", (e) => {
      if (e.machine !== Keyed.name) return;
      starts.push(performance.now());
      started.add(e.id);
    });
    node.on("step:rate_limited", (e) => void postponed.push({ at: performance.now(), id: e.id }));
  }
  await Promise.all([...nodes, client].map((e: GenDurable) => e.start()));
});

function keyedItems(from: number, count: number) {
  return Array.from({ length: count }, (_, i) => ({
    machine: Keyed,
    args: { n: from + i },
    concurrencyKey: `k${(from + i) % KEYS}`,
  }));
}

describe("a keyed, rate-limited queue", () => {
  it("runs at its limit beside lower-priority work that keeps every slot wanted", { timeout: 90_000 }, async () => {
    const RUN_MS = 12_000;
    const WARMUP_MS = 4_000;
    const tickMs = 50;
    // 120 keyed/s (above the limit) and 450 unkeyed/s (above what 40 slots of 50–150 ms can run).
    const keyedPerTick = 6;
    const fillerPerTick = 22;
    const t0 = performance.now();
    let n = 0;
    for (let tick = 0; performance.now() - t0 < RUN_MS; tick++) {
      const fillers = Array.from({ length: fillerPerTick }, () => ({ machine: Filler, args: {}, priority: 10 }));
      await client.insertMany([...keyedItems(n, keyedPerTick), ...fillers]);
      n += keyedPerTick;
      await sleep(Math.max(0, t0 + (tick + 1) * tickMs - performance.now()));
    }
    const from = t0 + WARMUP_MS;
    const to = t0 + RUN_MS;
    const ran = starts.filter((t) => t >= from && t < to).length;
    const rate = ran / ((to - from) / 1000);
    const { rows } = await db.pool.query<{ machine: string; status: string; n: number }>(
      `select machine, status, count(*)::int as n from ${s}.instances group by 1, 2 order by 1, 2`,
    );
    console.log(
      `beside busy lower-priority work: keyed ${rate.toFixed(1)} runs/s (limit ${LIMIT}/s, inserted 120/s); instances ${JSON.stringify(rows)}`,
    );
    // In the engine's lock order (keys, then rows in id order), as any writer beside running nodes
    // must: changing a keyed row's status also changes its key's row.
    await db.pool.query(
      `with keys_locked as (
         select ${s}.lock_keys(array(select concurrency_key from ${s}.instances where status = 'runnable')) as n),
       rows_locked as (
         select id from ${s}.instances where status = 'runnable' and (select n from keys_locked) >= 0
         order by id for update skip locked)
       update ${s}.instances i set status = 'cancelled' from rows_locked r where i.id = r.id`,
    );
    // The defect starved keyed work (0 runs/s). How close to the limit it comes beside the filler depends
    // on the CPUs the nodes get (100/s on a quiet host, 52/s at a load average of 20 on 2 cores), so the
    // floor only says it is not starved; the flow benchmark measures the rate.
    expect(rate, "keyed runs per second once warmed up").toBeGreaterThanOrEqual(0.3 * LIMIT);
  });

  it("drains a backlog at its limit, postponing each run about once", { timeout: 90_000 }, async () => {
    // Let the previous case's steps finish (its runnable rows were cancelled).
    await eventually("the nodes idle", async () => {
      const { rows } = await db.pool.query<{ n: number }>(
        `select count(*)::int as n from ${s}.instances where status = 'running'`,
      );
      return rows[0]!.n === 0;
    });
    await sleep(BURST * (1000 / LIMIT) + 100); // the bucket full again
    starts.length = 0;
    postponed.length = 0;
    const total = 1000;
    const ids = (await client.insertMany(keyedItems(0, total))).map((r) => r.id);
    await eventually(
      "the backlog drained",
      async () => {
        const { rows } = await db.pool.query<{ n: number }>(
          `select count(*)::int as n from ${s}.instances where id = any($1::bigint[]) and status = 'done'`,
          [ids],
        );
        return rows[0]!.n === total;
      },
      60_000,
    );
    starts.sort((a, b) => a - b);
    // After the burst, the rest at the limit: (runs − burst) over the time from the first start to the last.
    const rate = (starts.length - BURST) / ((starts.at(-1)! - starts[0]!) / 1000);
    const ofThese = new Set(ids);
    const mine = postponed.filter((p) => ofThese.has(p.id));
    const perRun = mine.length / total;
    const perInstance = new Map<string, number>();
    for (const p of mine) perInstance.set(p.id, (perInstance.get(p.id) ?? 0) + 1);
    const most = Math.max(0, ...perInstance.values());
    console.log(
      `drain of ${total}: ${rate.toFixed(1)} runs/s after the burst (limit ${LIMIT}/s); ${mine.length} postponements ` +
        `(${perRun.toFixed(2)} per run, at most ${most} for one instance)`,
    );
    // Every one ran (a run repeated after a lost lease would start twice; that is allowed).
    expect(ids.every((id) => started.has(id))).toBe(true);
    expect(rate, "runs per second after the burst").toBeGreaterThanOrEqual(0.6 * LIMIT);
    // One postponement per run that found the bucket short; a few more when a waiter came back so late that
    // its tokens overflowed the burst (2-3 for the unluckiest run on a loaded machine, 5 on one starved of
    // CPU). Never a claim/postpone cycle while it waits: that showed as 9 to 67 for one instance, even where
    // a loaded machine kept the average under one (a slow claim finds the bucket full).
    expect(perRun, "postponements per run").toBeLessThanOrEqual(1.5);
    expect(most, "postponements of the instance postponed most").toBeLessThanOrEqual(6);
  });
});
