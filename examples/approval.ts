/**
 * Recipe: a purchase needs two approvals out of three approvers, and one rejection ends it. An
 * approver who has not answered within a day is reminded, twice; after that the request expires.
 * The deadline and the approvals so far live in the state, nothing is counted by hand: the
 * composite await resumes on two approvals or one rejection, and a reminder waits again for the
 * approvals still missing.
 * In your own code the import is `from "gen-durable"`.
 */
import { z } from "zod";
import { defineMachine } from "../src/index.js";

export const APPROVERS = ["ann", "bob", "cyd"] as const;

/** Who was reminded, in order; a real machine sends an e-mail. */
export const reminders: string[][] = [];

const decision = z.object({
  item: z.string(),
  approvedBy: z.array(z.string()).default([]),
  reminded: z.number().default(0),
});

export const Approval = defineMachine({
  name: "Approval",
  queue: "approvals",
  state: decision,
  steps: {
    start: (ctx) => ctx.await(votes(ctx.state), "decide", ctx.state, daily),
    decide: (ctx) => {
      const rejection = ctx.awaited.find((s) => s.event === "reject");
      if (rejection) return ctx.done({ item: ctx.state.item, approved: false, by: [by(rejection.payload)] });
      const approvedBy = [...ctx.state.approvedBy, ...ctx.awaited.map((s) => by(s.payload))];
      return ctx.done({ item: ctx.state.item, approved: true, by: approvedBy });
    },
    remind: (ctx) => {
      // The timeout hands over the approvals that did arrive: keep them, and wait for the rest.
      const approvedBy = [...ctx.state.approvedBy, ...ctx.awaited.map((s) => by(s.payload))];
      if (ctx.state.reminded >= 2)
        return ctx.done({ item: ctx.state.item, approved: false, expired: true, by: approvedBy });
      reminders.push(APPROVERS.filter((a) => !approvedBy.includes(a)));
      const state = { ...ctx.state, approvedBy, reminded: ctx.state.reminded + 1 };
      return ctx.await(votes(state), "decide", state, daily);
    },
  },
});

/** Two approvals (those still missing), or one rejection. */
function votes(state: z.infer<typeof decision>) {
  return { any: [{ event: "approve", count: 2 - state.approvedBy.length }, "reject"] };
}
const daily = { timeout: "1d", onTimeout: "remind" } as const;

function by(payload: unknown): string {
  return (payload as { by: string }).by;
}
