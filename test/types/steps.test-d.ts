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
