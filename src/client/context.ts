/**
 * What the client API (insert, signal, read, cancel, retry, queues) works with. The engine
 * builds one; the client modules are plain functions over it, so any of them can be read
 * without the engine's wiring and loops.
 */
import type pg from "pg";
import type { ResolvedConfig } from "../config.js";
import type { TypedEmitter } from "../events.js";
import type { Notifier } from "../runtime/notifier.js";
import type { SignalSender } from "../runtime/signals.js";
import type { Wakeups } from "../runtime/wakeups.js";
import type { Queries } from "../sql/index.js";

export interface ClientContext {
  readonly pool: pg.Pool;
  readonly config: ResolvedConfig;
  /** Every statement, by aggregate (src/sql/). */
  readonly sql: Queries;
  readonly events: TypedEmitter;
  /** Work became due: this node's schedulers (and, by `broadcast`, every node) look. */
  readonly wake: Wakeups;
  /** How an insert outside a caller's transaction wakes other nodes (runtime/notifier.ts). */
  readonly notifier: Pick<Notifier, "beginInsert" | "endInsert">;
  /** NOTIFY `queue` to every node, resolving once it went out. */
  notifyQueue(queue: string): Promise<void>;
  /** Sends engine.signal's deliveries (not those in a caller's transaction), batching concurrent ones. */
  readonly signals: SignalSender;
  /** Throws EngineStoppedError once the engine stopped (its pool is closed). */
  assertUsable(): void;
  /** Refuses a caller's pool stricter than READ COMMITTED (see db/pool.ts). */
  checkPool(): Promise<void>;
}
