// QueueScheduler.wakeThen: what a wake-up for other nodes (their NOTIFY) waits for. It runs once
// the claim the wake-up led to is back, so that the NOTIFY's commit and the listeners it wakes do
// not share the server with this node's own claim; at once when no claim goes out.
import { describe, expect, it } from "vitest";
import type pg from "pg";
import type { TypedEmitter } from "../../src/events.js";
import { QueueScheduler } from "../../src/loops/scheduler.js";
import type { ClaimedRow, Executor } from "../../src/runtime/executor.js";
import type { Leases } from "../../src/runtime/leases.js";
import type { ClaimQueries } from "../../src/sql/claims.js";

/** Lets the scheduler's setImmediate and the promise callbacks after it run. */
const turn = async () => {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
};

/** A scheduler whose claims wait until the test answers them (with no rows, or an error). */
function heldClaims() {
  const claims: Array<{ answer: () => void; fail: (error: Error) => void }> = [];
  const errors: unknown[] = [];
  const claim = (() =>
    new Promise<{ rows: ClaimedRow[] }>((resolve, reject) =>
      claims.push({ answer: () => resolve({ rows: [] }), fail: reject }),
    )) as unknown as ClaimQueries["claim"];
  const scheduler = new QueueScheduler({
    queue: "q",
    concurrency: 2,
    global: undefined,
    onGivenBack: () => {},
    machines: ["m"],
    nodeId: "node",
    leaseMs: 30_000,
    pool: {} as pg.Pool,
    claims: { claim } as ClaimQueries,
    executor: { drawsTokens: () => false } as unknown as Executor,
    leases: {} as Leases,
    events: { emit: () => {} } as unknown as TypedEmitter,
    onError: (_loop, error) => errors.push(error),
  });
  return { scheduler, claims, errors };
}

describe("QueueScheduler.wakeThen", () => {
  it("runs its callback once the claim its wake-up led to is back, not before", async () => {
    const { scheduler, claims } = heldClaims();
    scheduler.start();
    await turn();
    claims[0]!.answer(); // the start's claim: nothing due
    await turn();
    const told: string[] = [];
    scheduler.wakeThen(() => told.push("notify"));
    await turn();
    expect(claims).toHaveLength(2);
    expect(told).toEqual([]);
    claims[1]!.answer();
    await turn();
    expect(told).toEqual(["notify"]);
    await scheduler.stop();
  });

  it("waits past a claim already out when it woke the scheduler: that claim may predate its rows", async () => {
    const { scheduler, claims } = heldClaims();
    scheduler.start();
    await turn();
    const told: string[] = [];
    scheduler.wakeThen(() => told.push("notify"));
    await turn();
    claims[0]!.answer();
    await turn();
    expect(told).toEqual([]);
    expect(claims).toHaveLength(2);
    claims[1]!.answer();
    await turn();
    expect(told).toEqual(["notify"]);
    await scheduler.stop();
  });

  it("runs its callback after a claim that failed too", async () => {
    const { scheduler, claims, errors } = heldClaims();
    scheduler.start();
    await turn();
    const told: string[] = [];
    claims[0]!.answer();
    await turn();
    scheduler.wakeThen(() => told.push("notify"));
    await turn();
    claims[1]!.fail(new Error("connection lost"));
    await turn();
    expect(told).toEqual(["notify"]);
    expect(errors).toHaveLength(1);
    await scheduler.stop();
  });

  it("runs its callback at once on a stopped scheduler, and stop() tells those still waiting", async () => {
    const { scheduler, claims } = heldClaims();
    const told: string[] = [];
    scheduler.wakeThen(() => told.push("before start"));
    expect(told).toEqual(["before start"]);
    scheduler.start();
    await turn();
    claims[0]!.answer();
    await turn();
    scheduler.wakeThen(() => told.push("woken"));
    const stopping = scheduler.stop();
    expect(told).toEqual(["before start", "woken"]);
    await stopping;
    expect(claims).toHaveLength(1);
  });
});
