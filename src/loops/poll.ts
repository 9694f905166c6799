/**
 * The poll, on every node with queues: every poll interval, each queue's
 * scheduler looks for due work. The fallback for what no NOTIFY announced —
 * rows that came due by time (a delay, a backoff, a rate limit's turn), and
 * notifications lost while the LISTEN connection was down.
 */
import type { LoopDeps } from "./deps.js";
import { Loop } from "./loop.js";

export interface PollDeps extends Pick<LoopDeps, "events" | "onError"> {
  /** How many queues this node schedules (the tick's count). */
  queues: () => number;
  wakeAll: () => void;
}

export function pollLoop(deps: PollDeps, intervalMs: number): Loop {
  return new Loop({
    name: "poll",
    intervalMs,
    onError: deps.onError,
    tick: async () => {
      const started = performance.now();
      deps.wakeAll();
      deps.events.emit("loop:tick", { loop: "poll", durationMs: performance.now() - started, count: deps.queues() });
    },
  });
}
