// Order within a concurrency key holds even when the key's next instance is briefly locked by
// someone else (a signal in a caller's transaction, say): the claim must not run the instance
// behind it instead. The lock is held from a side connection until a claim has come and gone.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const started: string[] = [];
const Ordered = defineJob({
  name: "KeyOrdered",
  queue: "order",
  args: z.object({ name: z.string() }),
  perform: async (args) => {
    started.push(args.name);
    return null;
  },
});

describe("order within a concurrency key", () => {
  it("waits for a locked head instead of running the instance behind it", async () => {
    const client = db.engine();
    await client.start();
    const first = await client.insert(Ordered, { args: { name: "first" }, concurrencyKey: "account:1" });
    await client.insert(Ordered, { args: { name: "second" }, concurrencyKey: "account:1" });

    const side = await db.pool.connect();
    try {
      await side.query("begin");
      await side.query(`select id from ${s}.instances where id = $1 for update`, [first.id]);
      const worker = db.engine({ queues: { order: 2 }, machines: [Ordered], pollInterval: "50ms" });
      let claims = 0;
      worker.on("loop:tick", (e) => {
        if (e.loop === "scheduler") claims++;
      });
      await worker.start();
      // Several claims came and went while the head was locked.
      await eventually("three claims", () => claims >= 3);
      expect(started).toEqual([]);
      await side.query("commit");
    } finally {
      side.release();
    }
    await eventually("both ran", () => started.length === 2);
    expect(started).toEqual(["first", "second"]);
  });
});
