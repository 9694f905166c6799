/** What every maintenance loop is given: the pool, the engine's events, error reporting and wake-ups. */
import type pg from "pg";
import type { TypedEmitter } from "../events.js";
import type { Wakeups } from "../runtime/wakeups.js";

export interface LoopDeps {
  pool: pg.Pool;
  events: TypedEmitter;
  /** A tick failed: reported as an `engine:error` event and logged; the loop ticks again later. */
  onError: (loop: string, error: unknown) => void;
  wake: Wakeups;
}

/** Rows per maintenance statement: bounded so no sweep holds many locks at once. */
export const BATCH = 1000;
