// The subscription recipe (examples/subscription.ts), run with gen-durable/testing.
import { beforeEach, describe, expect, it } from "vitest";
import { advanceTime, drain } from "../../src/testing/index.js";
import { outbox, Subscription } from "../../examples/subscription.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const engine = db.engine({ queues: { default: 4 }, machines: [Subscription] });
await engine.start();
beforeEach(() => void (outbox.length = 0));

describe("subscription with a free trial", () => {
  it("reminds on day 11 and ends the trial on day 14; questions do not move either", async () => {
    const { id } = await engine.insert(Subscription, { state: { customer: "ann" } });
    await drain(engine);
    await advanceTime(engine, "5d");
    await engine.signal({ id }, "question", "pricing?");
    await drain(engine);
    await advanceTime(engine, "5d");
    await engine.signal({ id }, "question", "export?");
    await drain(engine);
    expect(outbox).toEqual(['ann: answer to "pricing?"', 'ann: answer to "export?"']);
    // Day 10 to day 13: the reminder at day 11, nothing more.
    await advanceTime(engine, "3d");
    await drain(engine);
    expect(outbox.at(-1)).toBe("ann: your trial ends in 3 days");
    await engine.signal({ id }, "question", "discount?");
    await drain(engine);
    await advanceTime(engine, "1d");
    await drain(engine);
    expect((await engine.get(id))?.result).toEqual({ status: "expired" });
    expect(outbox).toEqual([
      'ann: answer to "pricing?"',
      'ann: answer to "export?"',
      "ann: your trial ends in 3 days",
      'ann: answer to "discount?"',
      "ann: your trial has ended",
    ]);
  });

  it("a whole trial in one advanceTime: the reminder, then the end", async () => {
    const { id } = await engine.insert(Subscription, { state: { customer: "bob" } });
    await drain(engine);
    await advanceTime(engine, "20d");
    await drain(engine);
    expect(outbox).toEqual(["bob: your trial ends in 3 days", "bob: your trial has ended"]);
    expect((await engine.get(id))?.status).toBe("done");
  });

  it("subscribing renews every 30 days until cancelled, and says goodbye", async () => {
    const { id } = await engine.insert(Subscription, { state: { customer: "cyd" } });
    await drain(engine);
    await advanceTime(engine, "2d");
    await engine.signal({ id }, "subscribe");
    await drain(engine);
    await advanceTime(engine, "95d");
    await drain(engine);
    await engine.cancel(id, "moving away");
    await drain(engine);
    expect(outbox).toEqual([
      "cyd: charged for month 1",
      "cyd: charged for month 2",
      "cyd: charged for month 3",
      "cyd: charged for month 4",
      "cyd: sorry to see you go (moving away)",
    ]);
    expect(await engine.get(id)).toMatchObject({ status: "cancelled", error: { message: "moving away" } });
  });
});
