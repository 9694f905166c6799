// Compile-time contract of the typed edges: signals, results and handles, children, jobs without args.
import { expectTypeOf } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine, GenDurable, type Instance } from "../../src/index.js";

const SendEmail = defineJob({
  name: "SendEmail",
  args: z.object({ to: z.string() }),
  perform: async (args) => ({ sent: args.to }),
});

const Checkout = defineMachine({
  name: "Checkout",
  state: z.object({ order: z.number() }),
  signals: {
    payment_confirmed: z.object({ amount: z.number() }),
    cancelled: z.object({ reason: z.string() }),
  },
  result: z.object({ charged: z.number() }),
  steps: {
    start: (ctx) => {
      // @ts-expect-error "shipped" is not a declared signal
      ctx.await("shipped", "paid");
      // @ts-expect-error an undeclared event in a spec
      ctx.await({ any: ["payment_confirmed", "nope"] }, "paid");
      return ctx.await({ any: ["payment_confirmed", "cancelled"] }, "paid");
    },
    paid: (ctx) => {
      const signal = ctx.awaited[0]!;
      if (signal.event === "payment_confirmed") {
        expectTypeOf(signal.payload).toEqualTypeOf<{ amount: number }>();
        // @ts-expect-error the result must match the result schema
        ctx.done({ charged: "x" });
        return ctx.done({ charged: signal.payload.amount });
      }
      expectTypeOf(signal.payload).toEqualTypeOf<{ reason: string }>();
      // @ts-expect-error a child's args must match the job's schema
      ctx.spawn([{ machine: SendEmail, args: { to: 1 } }], "joined");
      // @ts-expect-error a job takes args, not state
      ctx.spawn([{ machine: SendEmail, state: { to: "a" } }], "joined");
      return ctx.spawn([{ machine: SendEmail, args: { to: "a@b.c" } }], "joined");
    },
    joined: (ctx) => {
      for (const child of ctx.childrenOf(SendEmail)) {
        expectTypeOf(child.result).toEqualTypeOf<{ sent: string } | null>();
      }
      expectTypeOf(ctx.children[0]!.result).toBeUnknown();
      return ctx.done({ charged: 0 });
    },
  },
});

// A job needs no args and no ceremony.
const Tick = defineJob({ name: "Tick", perform: async () => 1 });

declare const engine: GenDurable;
async function client() {
  const handle = await engine.insert(Checkout, { state: { order: 1 } });
  const done = await engine.wait(handle);
  expectTypeOf(done.state).toEqualTypeOf<{ order: number }>();
  expectTypeOf(done.result).toEqualTypeOf<{ charged: number } | null>();
  const byId = await engine.wait(handle.id);
  expectTypeOf(byId.result).toEqualTypeOf<{ charged: number } | null>();
  const got = await engine.get(handle.id);
  expectTypeOf(got).toEqualTypeOf<Instance<{ order: number }, { charged: number }> | null>();
  // The id is a plain string, and a plain string still works (untyped).
  const plain: string = handle.id;
  expectTypeOf(await engine.wait(plain)).toEqualTypeOf<Instance>();
  expectTypeOf(await engine.get({ correlationKey: "k" })).toEqualTypeOf<Instance | null>();

  await engine.signal(Checkout, "order:1", "payment_confirmed", { amount: 5 });
  // @ts-expect-error a wrong payload
  await engine.signal(Checkout, "order:1", "payment_confirmed", { amount: "5" });
  // @ts-expect-error an undeclared event
  await engine.signal(Checkout, "order:1", "shipped", {});
  // The untyped form takes any event (checked at run time).
  await engine.signal("order:1", "anything", { x: 1 });

  await engine.insert(Tick);
  await engine.insert(Tick, { args: { any: "json" } });
  const job = await engine.wait((await engine.insert(SendEmail, { args: { to: "x" } })).id);
  expectTypeOf(job.result).toEqualTypeOf<{ sent: string } | null>();
  // @ts-expect-error a machine needs its state
  await engine.insert(Checkout);

  await engine.insertMany([
    { machine: Checkout, state: { order: 1 } },
    { machine: SendEmail, args: { to: "x" } },
  ]);
  // @ts-expect-error each item is checked against its machine
  await engine.insertMany([{ machine: SendEmail, args: { to: 1 } }]);
}
void client;

// Cron entries are checked against their machines too.
new GenDurable({
  connectionString: "postgres://localhost/db",
  machines: [Checkout, SendEmail, Tick],
  cron: [
    { name: "a", schedule: "@daily", machine: SendEmail, args: { to: "ops@example.com" } },
    { name: "b", schedule: "@daily", machine: Tick },
    { name: "c", schedule: "@daily", machine: "SendEmail", args: { anything: true } },
  ],
});
new GenDurable({
  connectionString: "postgres://localhost/db",
  machines: [SendEmail],
  // @ts-expect-error a cron entry's args must match its job
  cron: [{ name: "a", schedule: "@daily", machine: SendEmail, args: { to: 1 } }],
});

// Declared transitions name steps of the machine.
defineMachine({
  name: "Declared",
  state: z.object({}),
  steps: {
    start: {
      to: ["ship", "cancelled"],
      run: (ctx) => {
        expectTypeOf(ctx.step).toEqualTypeOf<"start" | "ship" | "cancelled" | "bad">();
        // @ts-expect-error "bad" is a step, but not one that start declares
        ctx.next("bad");
        // @ts-expect-error an undeclared target of an await
        ctx.await("go", "bad");
        // @ts-expect-error an undeclared target of a spawn
        ctx.spawn([], "bad");
        return ctx.state ? ctx.next("ship") : ctx.await("go", "cancelled");
      },
    },
    ship: (ctx) => ctx.next("bad"),
    cancelled: { run: (ctx) => ctx.cancel() },
    // @ts-expect-error "nowhere" is not a step of the machine
    bad: { to: ["nowhere"], run: (ctx) => ctx.done() },
  },
});
