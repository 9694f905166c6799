import { describe, expect, it } from "vitest";
import { nodeWakeups, type WorkerNode } from "../../src/worker.js";

/**
 * A node whose scheduler of queue "q" claims as QueueScheduler.wakeThen() does: the claim goes
 * out, recorded in `sent`, and the callback runs once the test answers it (`answerClaim`).
 */
function nodeWithScheduler(sent: string[]) {
  const waiting: Array<() => void> = [];
  const scheduler = {
    wakeThen: (after: () => void) => {
      sent.push("claim q");
      waiting.push(after);
    },
  };
  const worker = { schedulers: new Map([["q", scheduler]]) } as unknown as WorkerNode;
  const wakeups = nodeWakeups(
    () => worker,
    (queue) => sent.push(`notify ${queue}`),
  );
  return Object.assign(wakeups, { answerClaim: () => waiting.splice(0).forEach((after) => after()) });
}

describe("nodeWakeups.broadcast", () => {
  it("sends the NOTIFY that wakes the other nodes once this node's own claim is back", () => {
    // Sent beside the claim, the NOTIFY ran beside it on the server, and an insert on the worker's
    // own engine started its step later.
    const sent: string[] = [];
    const node = nodeWithScheduler(sent);
    node.broadcast("q");
    expect(sent).toEqual(["claim q"]);
    node.answerClaim();
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
