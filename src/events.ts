/** Events of `engine.on(...)`: one per step lifecycle point, per instance outcome and per loop tick. */
import { EventEmitter } from "node:events";
import type { ErrorRecord } from "./json.js";

interface StepFacts {
  id: string;
  machine: string;
  step: string;
  attempt: number;
  queue: string;
}

export interface EngineEvents {
  "step:start": StepFacts;
  /** A step's outcome was committed. */
  "step:stop": StepFacts & { outcome: string; durationMs: number };
  /** A step threw, returned something invalid or timed out; `willRetry` says whether another attempt follows. */
  "step:exception": StepFacts & { error: ErrorRecord; durationMs: number; willRetry: boolean };
  "instance:done": { id: string; machine: string; result: unknown };
  "instance:failed": { id: string; machine: string; error: ErrorRecord };
  "instance:cancelled": { id: string; machine: string; reason: string | undefined };
  /** The claim was lost before the outcome committed; the outcome was discarded. */
  "lease:lost": StepFacts;
  /** A background loop finished a tick. */
  "loop:tick": { loop: "scheduler" | "reaper" | "lease" | "timeouts" | "joins"; durationMs: number; count: number; queue?: string };
  /** A background loop or connection failed; the engine carries on. */
  "engine:error": { loop: string; error: unknown };
}

export type EngineEventName = keyof EngineEvents;

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

  /** Listeners that throw are isolated: telemetry must never break a step. */
  emit<E extends EngineEventName>(event: E, payload: EngineEvents[E]): void {
    if (this.emitter.listenerCount(event) === 0) return;
    for (const listener of this.emitter.listeners(event)) {
      try {
        (listener as (p: EngineEvents[E]) => void)(payload);
      } catch {
        // ignored on purpose
      }
    }
  }
}
