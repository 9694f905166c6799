/**
 * The reaper, on every node with queues (none is a leader: two reapers skip each
 * other's rows). Each tick takes back rows whose lease expired — their node
 * died, froze or lost the database — making them runnable again with the lost
 * attempt recorded (a row only claimed ahead goes back uncharged), then clears
 * what nobody uses any more: inbox signals past signalRetention, concurrency
 * keys still held by a cancelled step whose lease ran out, idle key rows, idle
 * full rate-limit buckets, and nodes that stopped heartbeating. Everything in
 * bounded batches, so no tick holds many locks at once.
 */
import type { ClaimQueries } from "../sql/claims.js";
import type { FlowQueries } from "../sql/flow.js";
import type { SignalQueries } from "../sql/signals.js";
import { Loop } from "./loop.js";
import { BATCH, type LoopDeps } from "./deps.js";

export interface ReaperDeps extends LoopDeps {
  claims: ClaimQueries;
  signals: SignalQueries;
  flow: FlowQueries;
}

export function reaperLoop(deps: ReaperDeps, intervalMs: number): Loop {
  return new Loop({ name: "reaper", intervalMs, onError: deps.onError, tick: () => reap(deps) });
}

async function reap({ pool, claims, signals, flow, events, wake }: ReaperDeps): Promise<void> {
  const started = performance.now();
  let total = 0;
  for (;;) {
    const { rows } = await claims.reap(pool, { limit: BATCH });
    const count = rows.reduce((sum, r) => sum + r.n, 0);
    total += count;
    for (const row of rows) wake.queue(row.queue);
    if (count < BATCH) break;
  }
  while ((await signals.expireInbox(pool, { limit: BATCH })).rowCount === BATCH);
  const { rows: freed } = await flow.freeCancelledHolds(pool, { limit: BATCH });
  for (const row of freed) wake.queue(row.queue);
  while ((await flow.forgetIdleKeys(pool, { limit: BATCH })).rowCount === BATCH);
  while ((await flow.forgetIdleBuckets(pool, { limit: BATCH })).rowCount === BATCH);
  await flow.forgetDeadNodes(pool);
  events.emit("loop:tick", { loop: "reaper", durationMs: performance.now() - started, count: total });
}
