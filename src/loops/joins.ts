/**
 * The join sweep, on every node with queues: counts finished children into
 * their parents in bulk and wakes each parent whose last child finished, at its
 * join step. A child's own commit never touches its parent's row, so 10,000
 * children finishing do not queue 10,000 updates on one row (see
 * src/sql/children.ts for the locking). Ticks every poll interval, and at once
 * when a child on this node finishes.
 */
import type { ChildQueries } from "../sql/children.js";
import type { LoopDeps } from "./deps.js";
import { Loop } from "./loop.js";

/** Children counted per statement: one parent update per parent per 5,000 finished children. */
const JOIN_BATCH = 5000;

export interface JoinSweepDeps extends LoopDeps {
  children: ChildQueries;
}

export function joinSweepLoop(deps: JoinSweepDeps, intervalMs: number): Loop {
  return new Loop({ name: "joins", intervalMs, onError: deps.onError, tick: () => sweep(deps) });
}

async function sweep({ pool, children, events, wake }: JoinSweepDeps): Promise<void> {
  const started = performance.now();
  let total = 0;
  for (;;) {
    const { rows } = await children.sweep(pool, { limit: JOIN_BATCH });
    const { counted, woken } = rows[0]!;
    total += counted;
    for (const queue of woken) wake.broadcast(queue);
    if (counted < JOIN_BATCH) break;
  }
  events.emit("loop:tick", { loop: "joins", durationMs: performance.now() - started, count: total });
}
