import { describe, expect, it } from "vitest";
import { nodeWakeups, type WorkerNode } from "../../src/worker.js";

/** One turn of the event loop's check phase: setImmediate callbacks queued before this one have run. */
const nextImmediate = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * A node whose scheduler of queue "q" claims as QueueScheduler.wake() does: from a setImmediate
 * (coalescing the wake-ups of one turn), recorded in `sent` as the claim goes out.
 */
function nodeWithScheduler(sent: string[]) {
  const scheduler = { wake: () => void setImmediate(() => sent.push("claim q")) };
  const worker = { schedulers: new Map([["q", scheduler]]) } as unknown as WorkerNode;
  return nodeWakeups(
    () => worker,
    (queue) => sent.push(`notify ${queue}`),
  );
}

describe("nodeWakeups.broadcast", () => {
  it("sends this node's claim before the NOTIFY that wakes the other nodes", async () => {
    // Sent first, the NOTIFY ran beside the claim on the server, and an insert on the worker's
    // own engine started its step later.
    const sent: string[] = [];
    nodeWithScheduler(sent).broadcast("q");
    expect(sent).toEqual([]);
    await nextImmediate();
    expect(sent).toEqual(["claim q", "notify q"]);
  });

  it("notifies at once for a queue this node does not run", () => {
    const sent: string[] = [];
    nodeWithScheduler(sent).broadcast("elsewhere");
    expect(sent).toEqual(["notify elsewhere"]);
  });

  it("notifies at once on an engine without a worker", () => {
    const sent: string[] = [];
    nodeWakeups(
      () => undefined,
      (queue) => sent.push(`notify ${queue}`),
    ).broadcast("q");
    expect(sent).toEqual(["notify q"]);
  });
});
