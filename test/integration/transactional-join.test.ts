// A transactional join step holds a pooled connection for its transaction; loading its
// ctx.children from the pool asked for a second one. With as many transactional joins in flight
// as the pool has connections, each waited for a connection another held: the node wedged for
// good (its leases kept being renewed on their own connection, so nothing was ever reaped).
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine } from "../../src/index.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

const Leaf = defineJob({
  name: "TxJoinLeaf",
  queue: "txjoin",
  args: z.object({ n: z.number() }),
  perform: async (args) => args.n,
});
const Parent = defineMachine({
  name: "TxJoinParent",
  queue: "txjoin",
  state: z.object({ n: z.number() }),
  steps: {
    start: (ctx) => ctx.spawn([{ machine: Leaf, args: { n: ctx.state.n } }], "join", ctx.state),
    join: {
      transactional: true,
      run: async (ctx) => {
        await ctx.client.query("select 1");
        return ctx.done(ctx.children.map((c) => c.result));
      },
    },
  },
});

describe("transactional join steps", () => {
  it("load ctx.children on their own transaction, so a pool of one connection does not wedge", async () => {
    const worker = db.engine({ queues: { txjoin: 4 }, machines: [Parent, Leaf], poolSize: 1 });
    await worker.start();
    const ids = (await worker.insertMany([1, 2, 3, 4].map((n) => ({ machine: Parent, state: { n } })))).map(
      (r) => r.id,
    );
    const done = await Promise.all(ids.map((id) => worker.wait(id, { timeout: 15_000 })));
    expect(done.map((i) => i.result)).toEqual([[1], [2], [3], [4]]);
  });
});
