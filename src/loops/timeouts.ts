/**
 * The await-timeout sweep, on every node with queues: resumes awaiting
 * instances whose deadline passed, at their `onTimeout` step, with whatever
 * signals had arrived. A timeout and a last signal racing resolve to exactly
 * one of the two (see fireTimeouts in src/runtime/signals.ts). Ticks every poll
 * interval, and when a deadline this node parked comes due.
 */
import { fireTimeouts } from "../runtime/signals.js";
import type { SignalQueries } from "../sql/signals.js";
import type { LoopDeps } from "./deps.js";
import { Loop } from "./loop.js";

/** Awaits resumed per transaction. */
const TIMEOUT_BATCH = 100;

export interface TimeoutSweepDeps extends LoopDeps {
  signals: SignalQueries;
}

export function timeoutSweepLoop(deps: TimeoutSweepDeps, intervalMs: number): Loop {
  return new Loop({ name: "timeouts", intervalMs, onError: deps.onError, tick: () => sweep(deps) });
}

async function sweep({ pool, signals, events, wake }: TimeoutSweepDeps): Promise<void> {
  const started = performance.now();
  let total = 0;
  for (;;) {
    const queues = await fireTimeouts(pool, signals, TIMEOUT_BATCH);
    total += queues.length;
    for (const queue of new Set(queues)) wake.broadcast(queue);
    if (queues.length < TIMEOUT_BATCH) break;
  }
  events.emit("loop:tick", { loop: "timeouts", durationMs: performance.now() - started, count: total });
}
