/**
 * Wake-ups: how one part of a node tells another that work may be due, instead
 * of each part holding callbacks into the engine. The engine implements it over
 * its schedulers, its loops and NOTIFY; the executor and the loops only call it.
 */
export interface Wakeups {
  /** Work may be due on `queue` now, or after `delayMs`: this node's scheduler looks. */
  queue(queue: string, delayMs?: number): void;
  /** Work became due on `queue`: this node looks now, and every other node through NOTIFY. */
  broadcast(queue: string): void;
  /** A child finished: the join sweep runs soon. */
  joins(): void;
  /** An await on this node parked with a deadline `delayMs` away: the timeout sweep runs then. */
  timeouts(delayMs: number): void;
}
