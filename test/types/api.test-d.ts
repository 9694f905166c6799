// Compile-time contract: step names, state and args types flow from the definitions.
import { expectTypeOf } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine, GenDurable, type Instance, type InsertResult } from "../../src/index.js";

const Checkout = defineMachine({
  name: "Checkout",
  state: z.object({ order: z.number(), note: z.string().optional() }),
  steps: {
    start: (ctx) => {
      expectTypeOf(ctx.state).toEqualTypeOf<{ order: number; note?: string | undefined }>();
      expectTypeOf(ctx.step).toEqualTypeOf<"start" | "ship">();
      // @ts-expect-error "shp" is not a step of Checkout
      ctx.await("paid", "shp");
      // @ts-expect-error onTimeout must be a step name too
      ctx.await("paid", "ship", undefined, { onTimeout: "nowhere" });
      return ctx.await("paid", "ship", ctx.state);
    },
    ship: (ctx) => {
      expectTypeOf(ctx.awaited[0]!.payload).toBeUnknown();
      return ctx.done({ shipped: ctx.state.order });
    },
  },
});

const SendEmail = defineJob({
  name: "SendEmail",
  args: z.object({ to: z.string() }),
  perform: async (args, ctx) => {
    expectTypeOf(args).toEqualTypeOf<{ to: string }>();
    expectTypeOf(ctx.attempt).toBeNumber();
    return { sent: true };
  },
});

declare const engine: GenDurable;
expectTypeOf(engine.insert(Checkout, { state: { order: 1 } })).resolves.toEqualTypeOf<InsertResult<typeof Checkout>>();
// @ts-expect-error a machine takes state, not args
void engine.insert(Checkout, { args: { order: 1 } });
// @ts-expect-error state must match the schema
void engine.insert(Checkout, { state: { order: "1" } });
void engine.insert(SendEmail, { args: { to: "a@b.c" }, priority: 1, delay: "5m", correlationKey: "k" });
// @ts-expect-error a job takes args, not state
void engine.insert(SendEmail, { state: { to: "a@b.c" } });
expectTypeOf(engine.get("1")).resolves.toEqualTypeOf<Instance | null>();

// Published values: ctx.publish returns nothing; waitForEvent takes an id, { id } or { correlationKey }.
export const Publisher = defineMachine({
  name: "Publisher",
  state: z.object({}),
  steps: {
    start: (ctx) => {
      expectTypeOf(ctx.publish("url", "https://x")).toBeVoid();
      // @ts-expect-error the key is a string
      ctx.publish(1, "x");
      return ctx.done();
    },
  },
});
expectTypeOf(engine.waitForEvent("1", "url", { timeout: "5s" })).resolves.toBeUnknown();
void engine.waitForEvent({ correlationKey: "order:1" }, "url");
void engine.waitForEvent({ id: "1" }, "url");
// @ts-expect-error an event key is a string
void engine.waitForEvent("1", 2);
expectTypeOf<Instance["published"]>().toEqualTypeOf<Record<string, unknown>>();

// Flow control on the definition: the key function gets the validated input.
export const Keyed = defineJob({
  name: "Keyed",
  args: z.object({ account: z.string() }),
  concurrency: { key: (args) => `acct:${args.account}`, limit: 1 },
  perform: async () => 1,
});
defineJob({
  name: "KeyedWrong",
  args: z.object({ account: z.string() }),
  // @ts-expect-error no such field
  concurrency: { key: (args) => args.acount },
  perform: async () => 1,
});
void engine.insert(Keyed, { args: { account: "a" }, concurrencyKey: null });
