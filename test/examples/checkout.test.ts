// The checkout recipe: the handler answers with the published payment URL; the webhook completes it.
import { describe, expect, it } from "vitest";
import { advanceTime, drain } from "../../src/testing/index.js";
import { checkoutMachine, paymentWebhook, startCheckout } from "../../examples/checkout.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const sessions: string[] = [];
const Checkout = checkoutMachine({
  createSession: async (order) => {
    sessions.push(order);
    return { url: `https://pay.example/${order}` };
  },
});
const engine = db.engine({ queues: { checkout: 4 }, machines: [Checkout], pollInterval: 50 });
await engine.start();

describe("checkout recipe", () => {
  it("answers with the payment URL, then ships once paid in full (webhooks retried)", async () => {
    const response = await startCheckout(engine, Checkout, "A1");
    expect(response).toEqual({ status: 201, body: { id: response.body.id, paymentUrl: "https://pay.example/A1" } });
    expect(await paymentWebhook(engine, { eventId: "ev1", order: "A1", paid: 40 })).toEqual({ status: 204 });
    await paymentWebhook(engine, { eventId: "ev1", order: "A1", paid: 40 }); // the provider retries
    await paymentWebhook(engine, { eventId: "ev2", order: "A1", paid: 42 });
    const done = await engine.wait(response.body.id, { timeout: 10_000 });
    expect(done.result).toEqual({ order: "A1", paid: 42 });
    expect(done.published).toEqual({ paymentUrl: "https://pay.example/A1", status: "paid" });
    expect(sessions).toEqual(["A1"]);
  });

  it("expires an unpaid checkout after an hour", async () => {
    const { body } = await startCheckout(engine, Checkout, "A2");
    await advanceTime(engine, "61m");
    await drain(engine);
    const expired = await engine.get(body.id);
    expect(expired?.status).toBe("cancelled");
    expect(await engine.waitForEvent(body.id, "status")).toBe("expired");
  });
});
