/**
 * The demo's two machines. In your own code the import is `from "gen-durable"`;
 * the examples use the sources so they always run what is in this checkout.
 */
import { z } from "zod";
import { defineMachine } from "../src/index.js";

/** The Checkout machine of the README: park until the payment webhook fires, then ship. */
export const Checkout = defineMachine({
  name: "Checkout",
  queue: "checkout",
  state: z.object({ order: z.number() }),
  initial: "start",
  steps: {
    start: (ctx) => ctx.await("payment_confirmed", "ship", ctx.state),
    ship: (ctx) => ctx.done({ order: ctx.state.order, paid: ctx.awaited[0]!.payload }),
  },
});

/** Who is running a step: the demo names its worker processes through DEMO_WORKER. */
const worker = () => process.env.DEMO_WORKER ?? `pid ${process.pid}`;

/** A step reporting what it does: to the parent demo when this is a worker process, else to stdout. */
export interface StepReport {
  type: "step";
  step: string;
  attempt: number;
  message: string;
}

function say(ctx: { step: string; attempt: number }, what: string): void {
  const report: StepReport = {
    type: "step",
    step: ctx.step,
    attempt: ctx.attempt,
    message: `runs step ${ctx.step} (attempt ${ctx.attempt}): ${what}`,
  };
  if (process.send) process.send(report);
  else console.log(`${worker()} ${report.message}`);
}

function sleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => (clearTimeout(timer), reject(signal.reason)), { once: true });
  });
}

export const PACK_MS = 2000;

/**
 * Three steps, one of them slow. Each step appends "<step> by <worker>" to the
 * state, so the final result shows which process committed which step.
 */
export const Fulfilment = defineMachine({
  name: "Fulfilment",
  queue: "fulfilment",
  state: z.object({ order: z.number(), trail: z.array(z.string()) }),
  initial: "pick",
  steps: {
    pick: async (ctx) => {
      say(ctx, `picking the items of order ${ctx.state.order}`);
      await sleep(300, ctx.abortSignal);
      return ctx.next("pack", { ...ctx.state, trail: [...ctx.state.trail, `pick by ${worker()}`] });
    },
    pack: async (ctx) => {
      say(ctx, `packing, this takes ${PACK_MS / 1000} s`);
      await sleep(PACK_MS, ctx.abortSignal);
      return ctx.next("ship", { ...ctx.state, trail: [...ctx.state.trail, `pack by ${worker()}`] });
    },
    ship: async (ctx) => {
      say(ctx, `handing the parcel to the carrier`);
      await sleep(300, ctx.abortSignal);
      return ctx.done({ order: ctx.state.order, trail: [...ctx.state.trail, `ship by ${worker()}`] });
    },
  },
});
