// The approval recipe: two of three approve, one rejection ends it, reminders keep earlier approvals.
import { describe, expect, it } from "vitest";
import { advanceTime, drain } from "../../src/testing/index.js";
import { Approval, reminders } from "../../examples/approval.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const engine = db.engine({ queues: { approvals: 4 }, machines: [Approval], pollInterval: 50 });
await engine.start();

async function request(item: string) {
  const { id } = await engine.insert(Approval, { state: { item }, correlationKey: `approval:${item}` });
  await drain(engine);
  return id;
}
const vote = (item: string, event: "approve" | "reject", by: string) =>
  engine.signal(`approval:${item}`, event, { by }, { dedupKey: `${event}:${by}` });

describe("approval recipe", () => {
  it("two approvals approve it; a repeated vote counts once", async () => {
    const id = await request("laptop");
    await vote("laptop", "approve", "ann");
    await vote("laptop", "approve", "ann");
    expect((await engine.get(id))?.status).toBe("awaiting");
    await vote("laptop", "approve", "cyd");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual({
      item: "laptop",
      approved: true,
      by: ["ann", "cyd"],
    });
  });

  it("one rejection ends it", async () => {
    const id = await request("yacht");
    await vote("yacht", "approve", "ann");
    await vote("yacht", "reject", "bob");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual({
      item: "yacht",
      approved: false,
      by: ["bob"],
    });
  });

  it("reminds the missing approvers daily, keeps the approvals that came, and expires after two reminders", async () => {
    reminders.length = 0;
    const id = await request("desk");
    await vote("desk", "approve", "bob");
    await advanceTime(engine, "1d");
    await drain(engine);
    expect(reminders).toEqual([["ann", "cyd"]]);
    await advanceTime(engine, "1d");
    await drain(engine);
    expect(reminders).toEqual([
      ["ann", "cyd"],
      ["ann", "cyd"],
    ]);
    await vote("desk", "approve", "ann");
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual({
      item: "desk",
      approved: true,
      by: ["bob", "ann"],
    });

    const chair = await request("chair");
    for (let day = 0; day < 3; day++) {
      await advanceTime(engine, "1d");
      await drain(engine);
    }
    expect((await engine.wait(chair, { timeout: 10_000 })).result).toEqual({
      item: "chair",
      approved: false,
      expired: true,
      by: [],
    });
  });
});
