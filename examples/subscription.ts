/**
 * Recipe: a subscription with a free trial. The trial lasts 14 days from sign-up; three days
 * before it ends the customer gets a reminder; questions to support are answered without moving
 * the end of the trial; subscribing ends the trial at once, and the subscription then renews every
 * 30 days until it is cancelled, when a farewell email goes out (onCancel).
 *
 * Deadlines are dates on the engine's clock (ctx.now()), computed once and kept in the state;
 * every await uses `until`, so waiting again after a question keeps them.
 *
 *   node --import tsx examples/subscription.ts     (DATABASE_URL: a migrated database)
 */
import { fileURLToPath } from "node:url";
import { z } from "zod";
import { defineMachine, GenDurable, migrate } from "../src/index.js";

const DAY = 86_400_000;

/** Stands in for the email service: what was sent, to whom. */
export const outbox: string[] = [];

const after = (from: Date | string, days: number) => new Date(new Date(from).getTime() + days * DAY).toISOString();

const State = z.object({
  customer: z.string(),
  trialEndsAt: z.string().default(""),
  remindAt: z.string().default(""),
  reminded: z.boolean().default(false),
  renewals: z.number().default(0),
});
type TrialState = z.output<typeof State>;

/** The trial's one wait: for the next signal, until the reminder or, once reminded, the trial's end. */
const TRIAL_EVENTS = { any: ["subscribe", "question"] };
function trialDeadline(state: TrialState): { until: string; onTimeout: "remind" | "expire" } {
  return state.reminded
    ? { until: state.trialEndsAt, onTimeout: "expire" }
    : { until: state.remindAt, onTimeout: "remind" };
}

export const Subscription = defineMachine({
  name: "Subscription",
  state: State,
  onCancel: "farewell",
  steps: {
    start: (ctx) => {
      const trialEndsAt = after(ctx.now(), 14);
      const state = { ...ctx.state, trialEndsAt, remindAt: after(trialEndsAt, -3) };
      return ctx.await(TRIAL_EVENTS, "trial", state, trialDeadline(state));
    },
    // A signal during the trial (before or after the reminder): its deadlines stay where they were.
    trial: (ctx) => {
      if (ctx.awaited[0]?.event === "subscribe") return ctx.next("renew");
      outbox.push(`${ctx.state.customer}: answer to "${String(ctx.awaited[0]?.payload)}"`);
      return ctx.await(TRIAL_EVENTS, "trial", ctx.state, trialDeadline(ctx.state));
    },
    remind: (ctx) => {
      outbox.push(`${ctx.state.customer}: your trial ends in 3 days`);
      const state = { ...ctx.state, reminded: true };
      return ctx.await(TRIAL_EVENTS, "trial", state, trialDeadline(state));
    },
    expire: (ctx) => {
      outbox.push(`${ctx.state.customer}: your trial has ended`);
      return ctx.done({ status: "expired" });
    },
    renew: (ctx) => {
      outbox.push(`${ctx.state.customer}: charged for month ${ctx.state.renewals + 1}`);
      return ctx.next("renew", { ...ctx.state, renewals: ctx.state.renewals + 1 }, { delay: "30d" });
    },
    farewell: (ctx) => {
      outbox.push(`${ctx.state.customer}: sorry to see you go (${ctx.cancellation?.reason ?? "cancelled"})`);
      return ctx.done();
    },
  },
});

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const connectionString = process.env.DATABASE_URL;
  await migrate({ connectionString });
  const engine = new GenDurable({ connectionString, queues: { default: 5 }, machines: [Subscription] });
  await engine.start();
  const key = `customer:${Date.now()}`;
  const { id } = await engine.insert(Subscription, { state: { customer: "ann" }, correlationKey: key });
  await engine.signal(key, "question", "how do I export my data?");
  await engine.signal(key, "subscribe");
  while (!outbox.some((m) => m.includes("charged"))) await new Promise((r) => setTimeout(r, 50));
  await engine.cancel(id, "moving to another plan");
  await engine.wait(id, { timeout: "30s" });
  for (const message of outbox) console.log(message);
  await engine.stop();
}
