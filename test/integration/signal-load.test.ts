// At PR size: the signal/await race, and a deduplicated storm.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

const started = new Set<string>();
const Racer = defineMachine({
  name: "Racer",
  queue: "race",
  state: z.object({ delay: z.number() }),
  steps: {
    start: async (ctx) => {
      started.add(ctx.id);
      // The signal is sent once the step has started: it lands 0–50 ms before the await.
      await new Promise((resolve) => setTimeout(resolve, ctx.state.delay));
      return ctx.await("go", "finish");
    },
    finish: (ctx) => ctx.done(ctx.awaited.map((s) => s.payload)),
  },
});

const Collector = defineMachine({
  name: "Collector",
  queue: "storm",
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.await({ event: "item", count: 50 }, "finish"),
    finish: (ctx) => ctx.done(ctx.awaited.map((s) => s.payload as number)),
  },
});

const engine = db.engine({ queues: { race: 100, storm: 20 }, machines: [Racer, Collector], poolSize: 20 });
await engine.start();

describe("signal load", () => {
  it("loses no signal that lands 0–50 ms before its await (2,000 iterations)", async () => {
    const all: string[] = [];
    for (let batch = 0; batch < 20; batch++) {
      const inserted = await engine.insertMany(
        Array.from({ length: 100 }, (_, i) => ({ machine: Racer, state: { delay: (batch * 100 + i) % 51 } })),
      );
      const ids = inserted.map((r) => r.id);
      all.push(...ids);
      await Promise.all(
        ids.map(async (id) => {
          await eventually(`${id} started`, () => started.has(id));
          await engine.signal({ id }, "go", id);
        }),
      );
    }
    const results = await Promise.all(all.map((id) => engine.wait(id, { timeout: 30_000 })));
    const lost = results.filter((r, i) => r.status !== "done" || JSON.stringify(r.result) !== JSON.stringify([all[i]]));
    expect(lost).toEqual([]);
  }, 180_000);

  it("each of 200 instances consumes exactly its 50 distinct signals from 4 senders with 10% duplicates", async () => {
    const ids = (await engine.insertMany(Array.from({ length: 200 }, () => ({ machine: Collector, state: {} })))).map(
      (r) => r.id,
    );
    // 11,000 sends: 50 distinct items per instance plus 10% resent with the same dedup key, shuffled.
    const sends: Array<{ id: string; n: number }> = [];
    for (const id of ids) for (let n = 0; n < 50; n++) sends.push({ id, n });
    for (let i = 0; i < 1000; i++) sends.push(sends[(i * 7919) % 10_000]!);
    for (let i = sends.length - 1; i > 0; i--) {
      const j = (i * 104729) % (i + 1);
      [sends[i], sends[j]] = [sends[j]!, sends[i]!];
    }
    let next = 0;
    let duplicates = 0;
    const sender = async () => {
      while (next < sends.length) {
        const { id, n } = sends[next++]!;
        const sent = await engine.signal({ id }, "item", n, { dedupKey: `item-${n}` });
        if (sent.duplicate) duplicates++;
      }
    };
    await Promise.all([sender(), sender(), sender(), sender()]);
    expect(duplicates).toBe(1000);
    const results = await Promise.all(ids.map((id) => engine.wait(id, { timeout: 60_000 })));
    for (const r of results) {
      expect(r.status).toBe("done");
      expect([...(r.result as number[])].sort((a, b) => a - b)).toEqual(Array.from({ length: 50 }, (_, n) => n));
    }
    const { rows } = await db.pool.query(
      `select count(*) filter (where consumed_at is null)::int as unconsumed, count(*)::int as stored
       from ${db.schema}.signals s join ${db.schema}.instances i on i.id = s.instance_id where i.machine = 'Collector'`,
    );
    expect(rows[0]).toEqual({ unconsumed: 0, stored: 10_000 });
  }, 180_000);
});
