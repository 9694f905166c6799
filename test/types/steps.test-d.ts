import { z } from "zod";
import { defineMachine } from "../../src/define.js";

export const M = defineMachine({
  name: "M",
  state: z.object({ order: z.number() }),
  steps: {
    start: (ctx) => ctx.next("ship", { order: ctx.state.order + 1 }),
    ship: (ctx) => {
      // @ts-expect-error "shp" is not a step
      ctx.next("shp");
      // @ts-expect-error state must match the schema
      ctx.next("ship", { order: "x" });
      return ctx.done({ order: ctx.state.order });
    },
    opts: { run: (ctx) => ctx.await("paid", "ship"), timeout: "1s" },
  },
});

// Composite await specs type-check; a pack's event must be a string.
export const Composite = defineMachine({
  name: "Composite",
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.await({ any: [{ event: "approve", count: 2 }, "reject", { all: ["a", "b"] }] }, "end"),
    wrong: (ctx) =>
      // @ts-expect-error a pack names its event as a string
      ctx.await({ any: [{ event: 1, count: 2 }] }, "end"),
    end: (ctx) => ctx.done(ctx.awaited.length),
  },
});

// Join conditions: the fourth argument of ctx.spawn.
export const Joins = defineMachine({
  name: "Joins",
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.spawn([], "end", undefined, { join: { quorum: 2 }, remaining: "keep" }),
    first: (ctx) => ctx.spawn([], "end", ctx.state, { join: "first" }),
    fast: (ctx) => ctx.spawn([], "end", undefined, { join: { failFast: true } }),
    // @ts-expect-error not a join condition
    wrong: (ctx) => ctx.spawn([], "end", undefined, { join: "most" }),
    end: (ctx) => ctx.done(ctx.children.length),
  },
});
