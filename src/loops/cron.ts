/**
 * The cron loop, one per node that has queues and cron entries. Every node runs
 * it; none is a leader. Each pass reads the database clock, fires every tick
 * that came due since the previous pass, and sleeps until the next tick of any
 * entry. A tick fires exactly once across all nodes because its (name, tick)
 * row and its instance are inserted by one statement with ON CONFLICT DO
 * NOTHING on the tick (see src/sql/cron.ts): the nodes race, one row wins.
 *
 * Time is the database's: local clocks of nodes may disagree with each other
 * and with Postgres, so each pass fetches now() and keeps the offset to the
 * local clock only to know how long to sleep.
 *
 * Missed ticks. On its first pass a node starts each entry from the entry's
 * latest recorded tick (an entry never recorded starts from now: no backfill).
 * A tick is missed when it is more than CATCH_UP_MS overdue by the time a pass
 * sees it (every node was down, or every node's loop stalled); then the entry's
 * policy decides for the whole gap: "latest" fires only the most recent due
 * tick, "skip" fires none. Ticks less overdue than that (a pass that ran a
 * little late, a quick restart) all fire.
 */
import { concurrencyKeyOf, concurrencyLimitOf } from "../runtime/definition-flow.js";
import type pg from "pg";
import type { ResolvedCronEntry } from "../cron/entries.js";
import type { TypedEmitter } from "../events.js";
import { cronQueries, type CronQueries } from "../sql/cron.js";
import { MAX_TIMER_MS } from "../timers.js";
import { Loop } from "./loop.js";

/**
 * Ticks at most this overdue are fired one by one; a gap with older ones is "missed" and follows the entry's policy.
 */
export const CATCH_UP_MS = 60_000;
/** Even with no tick due, a pass runs this often: it re-reads the database clock (which may have been changed). */
const IDLE_MS = 60_000;
/** Wake this long after a tick's time, so a pass at the tick sees it due despite timer and clock-offset slop. */
const WAKE_MARGIN_MS = 3;
/** A pending wake-up this close after the wanted time is kept rather than doubled by another timer. */
const WAKE_SLACK_MS = 50;
/** Old tick rows are pruned at most this often per node. */
const PRUNE_EVERY_MS = 10 * 60_000;
const PRUNE_BATCH = 1000;
/** After a failed pass (the database unreachable, say), try again this soon. */
const RETRY_MS = 1000;

export interface CronLoopOptions {
  pool: pg.Pool;
  schema: string;
  /** Checked entries: none `deferred` (engine.start() validated those with checkDeferredCron). */
  entries: readonly ResolvedCronEntry[];
  channel: string;
  maxPayloadBytes: number;
  events: TypedEmitter;
  onError: (loop: string, error: unknown) => void;
  /** An instance was inserted on `queue`: wake this node's scheduler (other nodes get the NOTIFY). */
  wake: (queue: string) => void;
}

interface Planned {
  entry: ResolvedCronEntry;
  ticks: number[];
}

export class CronLoop {
  private readonly loop: Loop;
  private readonly q: CronQueries;
  /** Per entry name: ticks at or before this (database ms) are handled. Unset until the entry's first pass. */
  private readonly cursors = new Map<string, number>();
  private readonly entries: readonly ResolvedCronEntry[];
  /** Database clock minus local clock, in ms, from the latest pass. */
  private offsetMs = 0;
  /** Local time of the wake-up already requested with triggerIn, so passes do not stack timers for the same tick. */
  private wakeAt: number | undefined;
  private lastPrune = -Infinity;

  constructor(private readonly o: CronLoopOptions) {
    this.q = cronQueries(o.schema);
    this.entries = o.entries;
    this.loop = new Loop({
      name: "cron",
      intervalMs: IDLE_MS,
      initialDelayMs: 0,
      tick: () => this.pass(),
      onError: o.onError,
    });
  }

  start(): void {
    this.loop.start();
  }

  async stop(): Promise<void> {
    await this.loop.stop();
  }

  private async pass(): Promise<void> {
    try {
      await this.passOnce();
    } catch (error) {
      // Soon, not after the idle interval: a longer outage would turn due ticks into missed ones.
      this.loop.triggerIn(RETRY_MS);
      throw error;
    }
  }

  private async passOnce(): Promise<void> {
    const started = performance.now();
    const fresh = this.entries.filter((e) => !this.cursors.has(e.name)).map((e) => e.name);
    if (fresh.length > 0) await this.record(fresh);
    const before = Date.now();
    const { rows } = await this.q.clock(this.o.pool, { names: fresh });
    const after = Date.now();
    const now = rows[0]!.now;
    // The reading was taken somewhere during the round trip: assume its middle.
    this.offsetMs = now - (before + after) / 2;

    const plan: Planned[] = [];
    for (const entry of this.entries) {
      const cursor = this.cursors.get(entry.name) ?? rows[0]!.last[entry.name] ?? now;
      const ticks = dueTicks(entry, cursor, now);
      if (ticks.length > 0) plan.push({ entry, ticks });
    }
    const count = plan.length > 0 ? await this.fire(plan) : 0;
    // Only now: a pass whose insert failed leaves its ticks due for the next pass.
    for (const entry of this.entries) this.cursors.set(entry.name, now);
    if (Date.now() - this.lastPrune >= PRUNE_EVERY_MS) await this.prune();
    this.o.events.emit("loop:tick", { loop: "cron", durationMs: performance.now() - started, count });
    this.sleepUntilNextTick(now);
  }

  /** Records the entries of `names` where `gen-durable cron` reads them (their first pass on this node). */
  private async record(names: string[]): Promise<void> {
    const entries = this.entries
      .filter((e) => names.includes(e.name))
      .map((e) => ({
        name: e.name,
        schedule: e.schedule,
        timezone: e.timezone,
        machine: e.machine.name,
        queue: e.queue,
        missed: e.missed,
      }));
    await this.q.record(this.o.pool, { entries });
  }

  private async fire(plan: Planned[]): Promise<number> {
    const due = plan.flatMap(({ entry, ticks }) =>
      ticks.map((tick) => {
        const key = concurrencyKeyOf(entry.machine, entry.state, undefined, `cron entry "${entry.name}"`);
        return {
          name: entry.name,
          tick_at: new Date(tick).toISOString(),
          machine: entry.machine.name,
          step: entry.machine.initial,
          state: entry.state,
          queue: entry.queue,
          priority: entry.priority,
          concurrency_key: key,
          concurrency_limit: concurrencyLimitOf(entry.machine, key),
          version: entry.machine.version,
        };
      }),
    );
    const { rows: inserted } = await this.q.fire(this.o.pool, { ticks: due, channel: this.o.channel });
    for (const queue of new Set(inserted.map((r) => r.queue))) this.o.wake(queue);
    return inserted.length;
  }

  /**
   * Sleeps until the next tick of any entry, by the database clock; the loop's idle pass covers far ticks and "never".
   */
  private sleepUntilNextTick(now: number): void {
    let next = Infinity;
    for (const entry of this.entries) next = Math.min(next, entry.next(now) ?? Infinity);
    if (next === Infinity) return;
    const target = next - this.offsetMs + WAKE_MARGIN_MS;
    const local = Date.now();
    // A tick further than the largest single timer (about 24 days): no timer at all; the idle passes re-plan long
    // before it.
    if (target - local > MAX_TIMER_MS) return;
    // A wake-up already pending no later than this one serves: its pass re-plans. A stale one (past) does not.
    if (this.wakeAt !== undefined && this.wakeAt > local && this.wakeAt <= target + WAKE_SLACK_MS) return;
    this.wakeAt = target;
    this.loop.triggerIn(Math.max(0, target - local));
  }

  private async prune(): Promise<void> {
    this.lastPrune = Date.now();
    while ((await this.q.prune(this.o.pool, { limit: PRUNE_BATCH })).rowCount === PRUNE_BATCH);
  }
}

/**
 * The ticks of `entry` to fire in (cursor, now], all by the database clock.
 * Ticks more than CATCH_UP_MS overdue make the gap "missed": the policy then
 * yields the latest due tick ("latest") or nothing ("skip").
 */
export function dueTicks(
  entry: Pick<ResolvedCronEntry, "next" | "latest" | "missed">,
  cursor: number,
  now: number,
): number[] {
  const first = entry.next(cursor);
  if (first === null || first > now) return [];
  if (now - first > CATCH_UP_MS) {
    if (entry.missed === "skip") return [];
    const latest = entry.latest(now);
    return latest === null ? [] : [latest];
  }
  const ticks: number[] = [];
  for (let tick: number | null = first; tick !== null && tick <= now; tick = entry.next(tick)) ticks.push(tick);
  return ticks;
}
