/**
 * Recipe: a checkout with a payment provider. The first step creates a payment session and
 * publishes its URL (ctx.publish); the HTTP handler that started the checkout answers with it
 * (engine.waitForEvent), without polling. The provider's webhook is a signal, deduplicated by its
 * event id; an unpaid checkout expires after an hour.
 * In your own code the import is `from "gen-durable"`.
 */
import { z } from "zod";
import { defineMachine, type GenDurable } from "../src/index.js";

/** The payment provider, as far as this recipe needs it. */
export interface PaymentProvider {
  createSession(order: string, amount: number): Promise<{ url: string }>;
}

export function checkoutMachine(provider: PaymentProvider) {
  return defineMachine({
    name: "Checkout",
    queue: "checkout",
    state: z.object({ order: z.string(), amount: z.number() }),
    steps: {
      start: async (ctx) => {
        const session = await provider.createSession(ctx.state.order, ctx.state.amount);
        ctx.publish("paymentUrl", session.url);
        return ctx.await("payment", "fulfil", ctx.state, { timeout: "1h", onTimeout: "expire" });
      },
      fulfil: (ctx) => {
        const payment = ctx.awaited[0]!.payload as { paid: number };
        if (payment.paid < ctx.state.amount) return ctx.await("payment", "fulfil"); // a partial payment: wait for the rest
        ctx.publish("status", "paid");
        return ctx.done({ order: ctx.state.order, paid: payment.paid });
      },
      expire: (ctx) => {
        ctx.publish("status", "expired");
        return ctx.cancel("not paid within the hour");
      },
    },
  });
}

/** POST /checkout: starts the checkout, answers with where to pay. */
export async function startCheckout(engine: GenDurable, machine: ReturnType<typeof checkoutMachine>, order: string) {
  const { id } = await engine.insert(machine, { state: { order, amount: 42 }, correlationKey: `order:${order}` });
  const paymentUrl = await engine.waitForEvent(id, "paymentUrl", { timeout: "10s" });
  return { status: 201, body: { id, paymentUrl } };
}

/** POST /webhooks/payment: the provider's notification; retried deliveries are harmless. */
export async function paymentWebhook(engine: GenDurable, body: { eventId: string; order: string; paid: number }) {
  await engine.signal(`order:${body.order}`, "payment", { paid: body.paid }, { dedupKey: body.eventId });
  return { status: 204 };
}
