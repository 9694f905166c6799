/** Events of `engine.on(...)`: one per step lifecycle point, per instance outcome and per loop tick. */
import { EventEmitter } from "node:events";
import type { ErrorRecord } from "./json.js";

/** What identifies one attempt of one step; part of every step event. */
export interface StepFacts {
  /** The instance's id. */
  id: string;
  /** The name of its machine. */
  machine: string;
  /** The step. */
  step: string;
  /** The attempt, 1-based. */
  attempt: number;
  /** The queue the instance runs on. */
  queue: string;
}

/** The background loops that report `loop:tick`. */
export type LoopName = "scheduler" | "poll" | "reaper" | "lease" | "timeouts" | "joins" | "gc" | "cron" | "tables";

/** Every event of `engine.on(event, listener)` with its payload. */
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
    /** The outcome committed: next, done, await, spawn, snooze, cancel, error, failed, ... */
    outcome: string;
    /** How long the step's code ran, in milliseconds. */
    durationMs: number;
  };
  /** A step threw, returned something invalid or timed out; `willRetry` says whether another attempt follows. */
  "step:exception": StepFacts & {
    /** The error, as stored. */
    error: ErrorRecord;
    /** How long the attempt ran, in milliseconds. */
    durationMs: number;
    /** true when another attempt follows. */
    willRetry: boolean;
  };
  /** An instance finished `done`. */
  "instance:done": {
    /** The instance's id. */
    id: string;
    /** The name of its machine. */
    machine: string;
    /** The result it stored. */
    result: unknown;
  };
  /** An instance ended `failed`. */
  "instance:failed": {
    /** The instance's id. */
    id: string;
    /** The name of its machine. */
    machine: string;
    /** The last attempt's error. */
    error: ErrorRecord;
  };
  /** An instance ended `cancelled`, by engine.cancel or its own `ctx.cancel`. */
  "instance:cancelled": {
    /** The instance's id. */
    id: string;
    /** The name of its machine. */
    machine: string;
    /** The reason given, if any. */
    reason: string | undefined;
  };
  /** The step's rate-limit bucket was short: its tokens are reserved and it runs after `waitMs`, no attempt used. */
  "step:rate_limited": StepFacts & {
    /** The name of the rate limit. */
    limit: string;
    /** How long until the step runs, in milliseconds. */
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
    /** The loop. */
    loop: LoopName;
    /** How long the tick took, in milliseconds. */
    durationMs: number;
    /** What the tick handled: rows claimed, reaped, deleted, ... (poll: the queues it polls). */
    count: number;
    /** The scheduler's queue (scheduler ticks only). */
    queue?: string;
  };
  /**
   * A background loop or connection failed; the engine carries on. `step` is
   * set when the failure belongs to one attempt (its outcome could not be
   * committed: the step re-runs after its lease expires).
   */
  "engine:error": {
    /** Where it failed: a loop's name, "executor", "notify", "check", "stop", ... */
    loop: string;
    /** The error. */
    error: unknown;
    /** The attempt whose outcome could not be committed, when there is one. */
    step?: StepFacts;
  };
  /**
   * Something an operator should fix, found by a worker node's checks (once a
   * minute; repeated every 15 minutes while it holds): autovacuum cannot run
   * on a hot table (`autovacuum_off`), a hot table's dead tuples pile up
   * (`dead_tuples`), a session holds the xmin horizon back so that vacuum can
   * remove nothing (`horizon_held`, with its `pid`), the node's clock is off
   * the database's (`clock_skew`, checked at every heartbeat), the LISTEN connection
   * goes through a connection pooler so this node polls (`listen_pooled`, docs/pgbouncer.md). Also
   * logged at warn. See docs/operations.md, Vacuum and Clocks.
   */
  "engine:warning": {
    /** What is wrong (see above). */
    kind: "autovacuum_off" | "dead_tuples" | "horizon_held" | "clock_skew" | "listen_pooled";
    /** autovacuum_off, dead_tuples: the table. */
    table?: string;
    /** horizon_held: the session that holds it. */
    pid?: number;
    /** clock_skew: node clock minus database clock, in milliseconds (positive: the node is ahead). */
    skewMs?: number;
    /** What is wrong and what to do, in words (the line logged). */
    message: string;
  };
}

/** The name of an engine event. */
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
