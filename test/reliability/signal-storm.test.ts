// Scenario 11, a signal storm: instances each awaiting 100 distinct signals, sent by 8 concurrent
// senders (each an engine with its own pool) with 10% resent under the same dedup key. Each instance
// consumes exactly its 100, each duplicate is refused as one (duplicate: true, nothing stored), and
// the wake-ups are coalesced: a side LISTEN connection counts the notifications against the signals.
// RELIABILITY_FULL=1 runs 1,000 instances (110,000 sends) instead of 50 (5,500).
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, type GenDurable } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const INSTANCES = process.env.RELIABILITY_FULL === "1" ? 1_000 : 50;
const PER_INSTANCE = 100;
const SENDERS = 8;
const db = await useTestDatabase(import.meta.url);
const S = `"${db.schema}"`;

const Collector = defineMachine({
  name: "Collector",
  queue: "storm",
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.await({ event: "item", count: PER_INSTANCE }, "finish"),
    finish: (ctx) => ctx.done(ctx.awaited.map((s) => s.payload as number)),
  },
});

const worker = db.engine({ queues: { storm: 20 }, machines: [Collector], poolSize: 10 });
await worker.start();
const senders: GenDurable[] = [];
for (let i = 0; i < SENDERS; i++) {
  const sender = db.engine({ poolSize: 2 });
  await sender.start();
  senders.push(sender);
}

const listener = new pg.Client({ connectionString: db.url });
await listener.connect();
let notifications = 0;
listener.on("notification", () => notifications++);
await listener.query(`listen "gen_durable_${db.schema}"`);
afterAll(() => listener.end());

describe("signal storm", () => {
  it(`${INSTANCES} instances × ${PER_INSTANCE} signals, 10% duplicates, ${SENDERS} senders`, async () => {
    const ids: string[] = [];
    for (let from = 0; from < INSTANCES; from += 500) {
      const batch = Array.from({ length: Math.min(500, INSTANCES - from) }, () => ({ machine: Collector, state: {} }));
      ids.push(...(await worker.insertMany(batch)).map((r) => r.id));
    }
    await eventually(
      "every instance to park",
      async () =>
        (await db.pool.query(`select count(*)::int as n from ${S}.instances where status = 'awaiting'`)).rows[0].n ===
        INSTANCES,
      120_000,
    );
    // Distinct sends, then 10% of them again (same dedup key), shuffled with a fixed LCG: the copy and
    // its original often go out from different senders at the same moment.
    const sends: Array<{ id: string; n: number }> = [];
    for (const id of ids) for (let n = 0; n < PER_INSTANCE; n++) sends.push({ id, n });
    const distinct = sends.length;
    for (let i = 0; i < distinct / 10; i++) sends.push(sends[(i * 7919) % distinct]!);
    let seed = 42;
    for (let i = sends.length - 1; i > 0; i--) {
      seed = (seed * 1103515245 + 12345) % 2 ** 31;
      const j = seed % (i + 1);
      [sends[i], sends[j]] = [sends[j]!, sends[i]!];
    }
    notifications = 0;
    const t0 = performance.now();
    let next = 0;
    let duplicates = 0;
    const send = async (engine: GenDurable) => {
      while (next < sends.length) {
        const { id, n } = sends[next++]!;
        const sent = await engine.signal({ id }, "item", n, { dedupKey: `item-${n}` });
        if (sent.duplicate) {
          duplicates++;
          expect(sent.signalId).toBeNull();
        }
      }
    };
    await Promise.all(senders.map(send));
    const sendSeconds = (performance.now() - t0) / 1000;
    const results = await Promise.all(ids.map((id) => worker.wait(id, { timeout: 300_000 })));
    // Let the listener drain what was sent with the last commits.
    await listener.query("select 1");
    const received = notifications;
    expect(duplicates).toBe(sends.length - distinct);
    const all = Array.from({ length: PER_INSTANCE }, (_, n) => n);
    for (const r of results) {
      expect(r.status).toBe("done");
      expect([...(r.result as number[])].sort((a, b) => a - b)).toEqual(all);
    }
    const { rows } = await db.pool.query(
      `select count(*) filter (where consumed_at is null)::int as unconsumed, count(*)::int as stored
       from ${S}.signals s join ${S}.instances i on i.id = s.instance_id where i.machine = 'Collector'`,
    );
    expect(rows[0]).toEqual({ unconsumed: 0, stored: distinct });
    // A signal that completes no await sends no wake-up: about one per instance, not one per signal.
    expect(received).toBeLessThan(distinct / 10);
    console.log(
      `${INSTANCES} instances × ${PER_INSTANCE} signals + ${sends.length - distinct} duplicates ` +
        `(${sends.length} sends, ${SENDERS} senders, ${(sends.length / sendSeconds).toFixed(0)}/s): each consumed ` +
        `exactly its ${PER_INSTANCE}; ${duplicates} duplicates refused; ${received} notifications for ` +
        `${distinct} stored signals (${(received / distinct).toFixed(3)} per signal, ` +
        `${(received / INSTANCES).toFixed(2)} per instance)`,
    );
  }, 900_000);
});
