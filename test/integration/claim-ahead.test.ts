// The claim-ahead buffer: sized by the node's pace, and given back when its rows wait too long.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, type EngineEvents } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

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
      await eventually("claimed ahead by the first node", async () => {
        const { rows } = await db.pool.query(
          `select count(*)::int as n from ${s}.instances where id = any($1) and claimed_ahead and leased_by = 'first'`,
          [ids],
        );
        return rows[0].n === 1;
      });
      // Given back after about a second: runnable, uncharged, leased by nobody.
      await eventually("given back", async () => {
        const { rows } = await db.pool.query(
          `select count(*)::int as n from ${s}.instances
           where id = any($1) and status = 'runnable' and attempt = 0 and leased_by is null`,
          [ids],
        );
        return rows[0].n === 3;
      });
      const second = db.engine({ queues: { ahead: 2 }, machines: [Hangs, Quick], nodeId: "second", poolSize: 3 });
      const startedOn: string[] = [];
      second.on("step:start", (e) => void startedOn.push(e.id));
      await second.start();
      try {
        for (const [k, id] of ids.entries()) expect((await client.wait(id, { timeout: 10_000 })).result).toBe(k + 1);
        expect(startedOn.sort()).toEqual([...ids].sort());
        for (const id of ids) expect((await client.history(id)).map((t) => t.outcome)).toEqual(["done"]);
      } finally {
        await second.stop();
      }
      expect((await client.get(hung.id))?.status).toBe("running");
      letGo();
      expect((await client.wait(hung.id, { timeout: 10_000 })).status).toBe("done");
    } finally {
      await first.stop();
    }
  });
});
