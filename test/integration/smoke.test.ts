import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine } from "../../src/index.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

const Checkout = defineMachine({
  name: "Checkout",
  queue: "checkout",
  state: z.object({ order: z.number(), paid: z.number().optional() }),
  steps: {
    start: (ctx) => ctx.await("payment_confirmed", "ship", ctx.state),
    ship: (ctx) => ctx.done({ order: ctx.state.order, paid: (ctx.awaited[0]!.payload as { amount: number }).amount }),
  },
});
const Hello = defineJob({
  name: "Hello",
  args: z.object({ to: z.string() }),
  perform: async (args) => ({ hi: args.to }),
});

describe("smoke", () => {
  it("runs the checkout machine end to end", async () => {
    const engine = db.engine({ queues: { checkout: 5, default: 5 }, machines: [Checkout, Hello] });
    await engine.start();
    const { id, inserted } = await engine.insert(Checkout, { state: { order: 42 }, correlationKey: "order:42" });
    expect(inserted).toBe(true);
    const again = await engine.insert(Checkout, { state: { order: 42 }, correlationKey: "order:42" });
    expect(again).toEqual({ id, inserted: false });
    await engine.signal("order:42", "payment_confirmed", { amount: 100 });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("done");
    expect(done.result).toEqual({ order: 42, paid: 100 });
    const history = await engine.history(id);
    expect(history.map((h) => h.outcome)).toEqual(["await", "resumed", "done"]);
    const job = await engine.insert(Hello, { args: { to: "you" } });
    expect((await engine.wait(job.id, { timeout: 10_000 })).result).toEqual({ hi: "you" });
  });
});
