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
  /** How an insert or a signal outside a caller's transaction wakes other nodes (see beginWrite). */
  readonly notifier: Pick<Notifier, "beginWrite" | "endWrite">;
  /** NOTIFY `queue` to every node, resolving once it went out. */
  notifyQueue(queue: string): Promise<void>;
  /** Sends engine.signal's deliveries (not those in a caller's transaction), batching concurrent ones. */
  readonly signals: SignalSender;
  /** Throws EngineStoppedError once the engine stopped (its pool is closed). */
  assertUsable(): void;
  /** Refuses a caller's pool stricter than READ COMMITTED (see db/pool.ts). */
  checkPool(): Promise<void>;
}

/** How one insert or signal outside a caller's transaction wakes the nodes that run what it made due. */
export interface WriteWakeups {
  /** The NOTIFY channel to send with the write's own commit, or null: then `due` sends it after. */
  readonly channel: string | null;
  /** After the commit: `queue` got work due. */
  due(queue: string): void;
  /** The write is over (committed or failed). */
  end(): void;
}

/**
 * A write alone in flight on a pure client engine sends its NOTIFY with its own commit, a round
 * trip sooner for the nodes that wait for it (Notifier.beginWrite). Any other write leaves it to
 * the engine once committed: concurrent writes that each notified would wait for each other's WAL
 * flush on Postgres's notify lock, and on an engine that runs queues the NOTIFY in the commit made
 * the caller wait for it (about 0.4 ms of an insert's or a signal's 1.0–1.4 ms on a 2-core server)
 * and could let this engine's own listener start the step before the call returned, which a test's
 * drain(engine) right after would miss. That engine wakes its own scheduler first, then the others.
 */
export function beginWrite(ctx: ClientContext): WriteWakeups {
  const alone = ctx.notifier.beginWrite() && ctx.config.queues.size === 0;
  return {
    channel: alone ? ctx.config.channel : null,
    due: (queue) => (alone ? ctx.wake.queue(queue) : ctx.wake.broadcast(queue)),
    end: () => ctx.notifier.endWrite(),
  };
}
