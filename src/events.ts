/** Events of `engine.on(...)`: one per step lifecycle point, per instance outcome and per loop tick. */
import { EventEmitter } from "node:events";
import type { ErrorRecord } from "./json.js";

/** What identifies one attempt of one step; part of every step event. */
export interface StepFacts {
  /** The instance's id. */
  id: string;
  /** Its machine or job. */
  machine: string;
  /** The step. */
  step: string;
  /** The attempt's number, from 1. */
  attempt: number;
  /** The queue it runs on. */
  queue: string;
}

/** The background loops that report `loop:tick`. */
export type LoopName = "scheduler" | "poll" | "reaper" | "lease" | "timeouts" | "joins" | "gc" | "cron" | "tables";

/** Every event of `engine.on(name, listener)`, with its payload. Events are this node's: a step another node runs is reported there. */
export interface EngineEvents {
  /**
   * An attempt of a step is about to run its code (not emitted for an attempt refused before running: see
   * step:exception).
   */
  "step:start": StepFacts;
  /**
   * A step's outcome was committed; `durationMs` is the time its code ran (the
   * commit excluded). A failed attempt emits it too, after step:exception, with
   * outcome "error" (retried) or "failed" (no attempts left).
   */
  "step:stop": StepFacts & {
    /** The outcome committed, as in history: next, await, spawn, done, snooze, cancelled, error, failed, … */
    outcome: string;
    /** How long the step's code ran, in milliseconds. */
    durationMs: number;
  };
  /** A step threw, returned something invalid or timed out; `willRetry` says whether another attempt follows. */
  "step:exception": StepFacts & {
    /** What was thrown (or why the outcome was refused), as stored. */
    error: ErrorRecord;
    /** How long the step's code ran, in milliseconds. */
    durationMs: number;
    /** Another attempt follows (after the backoff); false: the instance failed. */
    willRetry: boolean;
  };
  /** An instance ended `done` through this node. */
  "instance:done": {
    /** The instance's id. */
    id: string;
    /** Its machine or job. */
    machine: string;
    /** Its result. */
    result: unknown;
  };
  /** An instance ended `failed` through this node: its step failed on the last attempt. */
  "instance:failed": {
    /** The instance's id. */
    id: string;
    /** Its machine or job. */
    machine: string;
    /** The last attempt's error. */
    error: ErrorRecord;
  };
  /** A step of this node cancelled its instance (`ctx.cancel`). */
  "instance:cancelled": {
    /** The instance's id. */
    id: string;
    /** Its machine or job. */
    machine: string;
    /** The reason given to `ctx.cancel`. */
    reason: string | undefined;
  };
  /** The step's rate-limit bucket was short: its tokens are reserved and it runs after `waitMs`, no attempt used. */
  "step:rate_limited": StepFacts & {
    /** The name of the rate limit. */
    limit: string;
    /** Milliseconds until its turn. */
    waitMs: number;
  };
  /** The claim was lost before the outcome committed; the outcome was discarded. */
  "lease:lost": StepFacts;
  /**
   * This node stopped before the step finished: the step was abandoned and its
   * instance released to run again elsewhere, no attempt counted (graceful stop).
   */
  "step:released": StepFacts & {
    /** How long the step had run when it was released, in milliseconds. */
    durationMs: number;
  };
  /** A background loop finished a tick. */
  "loop:tick": {
    /** Which loop. */
    loop: LoopName;
    /** How long the round took, in milliseconds. */
    durationMs: number;
    /** What it did: rows claimed, leases renewed, rows recovered, awaits timed out, children counted, … */
    count: number;
    /** The queue, for the scheduler. */
    queue?: string;
  };
  /**
   * A background loop or connection failed; the engine carries on. `step` is
   * set when the failure belongs to one attempt (its outcome could not be
   * committed: the step re-runs after its lease expires).
   */
  "engine:error": {
    /** The loop (or part) that failed. */
    loop: string;
    /** What it threw. */
    error: unknown;
    /** The attempt it belongs to, if any. */
    step?: StepFacts;
  };
  /**
   * Something an operator should fix, found by a worker node's checks (once a
   * minute; repeated every 15 minutes while it holds): autovacuum cannot run
   * on a hot table (`autovacuum_off`), or a hot table's dead tuples pile up
   * (`dead_tuples`). Also logged at warn. See docs/operations.md, Vacuum.
   */
  "engine:warning": {
    /** What is wrong. */
    kind: "autovacuum_off" | "dead_tuples";
    /** The table concerned, when one is. */
    table?: string;
    /** The warning in words, with what to do. */
    message: string;
  };
}

/** The name of an engine event: a key of EngineEvents. */
export type EngineEventName = keyof EngineEvents;

const ignore = () => {};

export class TypedEmitter {
  private readonly emitter = new EventEmitter({ captureRejections: false });

  constructor() {
    // Every engine.wait() listens while it waits; hundreds at once are normal, not a leak.
    this.emitter.setMaxListeners(0);
  }

  on<E extends EngineEventName>(event: E, listener: (payload: EngineEvents[E]) => void): () => void {
    this.emitter.on(event, listener);
    return () => this.emitter.off(event, listener);
  }

  off<E extends EngineEventName>(event: E, listener: (payload: EngineEvents[E]) => void): void {
    this.emitter.off(event, listener);
  }

  /**
   * Listeners that throw are isolated: telemetry must never break a step. An
   * async listener's rejection is swallowed too: unhandled, it would take the
   * whole process down (Node's default for unhandled rejections).
   */
  emit<E extends EngineEventName>(event: E, payload: EngineEvents[E]): void {
    if (this.emitter.listenerCount(event) === 0) return;
    for (const listener of this.emitter.listeners(event)) {
      try {
        const returned: unknown = (listener as (p: EngineEvents[E]) => unknown)(payload);
        if (typeof (returned as PromiseLike<unknown> | undefined)?.then === "function")
          Promise.resolve(returned).catch(ignore);
      } catch {
        // ignored on purpose
      }
    }
  }
}
