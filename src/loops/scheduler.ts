/**
 * The scheduler of one queue on this node: keeps up to `concurrency` steps
 * running. It claims due rows in batches into a local buffer (claim-ahead: about
 * AHEAD_WINDOW_MS of work beyond the running rows, leased and renewed like
 * running rows), and frees a slot as soon as a step's code has settled: the
 * next step starts while the previous outcome is still in the group commit.
 * Each instance still waits for its own commit, because its row stays
 * `running` until then. Rows whose step has a rate limit draw their tokens
 * before a slot is free (EARLY_DRAW_WINDOW_MS). A slot thus need not idle
 * through a claim's, a commit's or a draw's round trip (bench/README.md,
 * "Figures behind choices in the code", has what this gained).
 * Woken by NOTIFY, by local commits and by the poll loop.
 */
import { withTransaction } from "../db/pool.js";
import type pg from "pg";
import type { TypedEmitter } from "../events.js";
import type { ClaimQueries } from "../sql/claims.js";
import type { ClaimedRow, Executor } from "../runtime/executor.js";
import type { Leases } from "../runtime/leases.js";
import { setLongTimeout, type LongTimeout } from "../timers.js";
import { StepAbort } from "../runtime/step-abort.js";
import { MAX_BATCH } from "../runtime/completer.js";

/**
 * The claim-ahead buffer holds about this much of the queue's work: as many rows as this node
 * starts in this time at its current pace, at least `concurrency`, at most MAX_AHEAD. Short steps
 * thus come in claims of hundreds (each claim and each group commit costs about as much again per
 * statement as per row), while slow steps are not hoarded away from other nodes.
 */
const AHEAD_WINDOW_MS = 50;
const MAX_AHEAD = 1_000;
/** How often the pace of starts is measured (launches per second, smoothed). */
const PACE_SAMPLE_MS = 100;
/**
 * Ramping up (a node's first work, or work after an idle spell), the pace is sampled early, after at
 * least this long: once the slots have turned over twice at more than twice the pace known, the
 * steps are short and their pace shows. Until then the buffer holds `concurrency` rows and few steps
 * draw their tokens early, so waiting out a whole sample ran the first tenth of a second of short
 * steps nearly a claim and a draw at a time. Steps that run longer never turn the slots over that
 * fast and wait for the full sample, as before.
 */
const RAMP_PACE_SAMPLE_MS = 5;
/**
 * A row claimed ahead that has waited this long for a slot is given back (uncharged, in its place)
 * for other nodes: the pace it was claimed for did not hold (the running steps turned slow or hang).
 */
const BUFFER_WAIT_MAX_MS = 1_000;
/**
 * A rate-limited step takes its tokens before its code runs: a synchronous commit whose round trip
 * idled its slot (no-op steps with a limit that never ran short ran at 0.42–0.44 of the pace without
 * one). So rows claimed ahead whose step draws tokens are launched before a slot is free: as many as
 * this node starts in this time at its pace, at most EARLY_DRAW_MAX × `concurrency`. Each draws its
 * tokens (the draws of one bucket share a statement), then waits for a slot: at the node's pace it
 * takes its tokens about this long before its code runs. No more tokens are taken than the limit
 * allows; a row refused a slot (the node stops, or it waited BUFFER_WAIT_MAX_MS) is given back
 * unstarted and its tokens stay spent.
 */
const EARLY_DRAW_WINDOW_MS = 10;
const EARLY_DRAW_MAX = 4;
/** Outcomes the group commit may have waiting beyond the buffer's worth: two full batches (see rowsWanted). */
const COMMIT_ROOM = 2 * MAX_BATCH;

/**
 * How many more rows a node should hold: free slots plus room in the claim-ahead buffer (`ahead`
 * rows), less what it holds (running, launched early, buffered). Outcomes waiting for the group
 * commit get room of their own: the buffer's worth and two full batches (one being written, the
 * next filling). Past that nothing is claimed ahead, and at `concurrency` more (a slow database)
 * nothing is claimed, rather than pile up leases. With room for only the buffer's worth, a big
 * batch's commit stopped the claims, the buffer ran dry, and the slots idled through the rest of
 * the commit and the next claim's round trip (bench/README.md, "Figures behind choices in the
 * code"). Filling free slots through a commit matters where nothing is claimed ahead (under a
 * global limit, or after a give-back): a batch of short steps settles at once, and the slots of a
 * whole claim would idle through its group commit.
 */
export function rowsWanted(o: { concurrency: number; ahead: number; committing: number; held: number }): number {
  const commitRoom = Math.max(o.ahead, o.concurrency) + COMMIT_ROOM;
  if (o.committing >= o.concurrency + commitRoom) return 0;
  const buffered = o.committing < commitRoom ? o.ahead : 0;
  return Math.max(0, o.concurrency + buffered - o.held);
}

/**
 * The node's pace of starts (steps a second) after `launches` in the `elapsed` ms since the last
 * sample, or undefined while the sample goes on. Smoothed over samples of PACE_SAMPLE_MS; an idle
 * spell counts as one sample, so a burst after it starts from a small buffer. A burst of short
 * steps is sampled early and replaces the pace it outran (RAMP_PACE_SAMPLE_MS).
 */
export function sampledPace(o: {
  pace: number;
  launches: number;
  elapsed: number;
  concurrency: number;
}): number | undefined {
  const sampled = (o.launches * 1000) / o.elapsed;
  const rampingUp = o.elapsed >= RAMP_PACE_SAMPLE_MS && o.launches >= 2 * o.concurrency && sampled > 2 * o.pace;
  if (rampingUp || o.elapsed > 4 * PACE_SAMPLE_MS) return sampled;
  return o.elapsed >= PACE_SAMPLE_MS ? (o.pace + sampled) / 2 : undefined;
}

export interface QueueSchedulerOptions {
  queue: string;
  concurrency: number;
  /** Running steps of this queue across all nodes (queues: { q: { concurrency, global } }). */
  global: number | undefined;
  /** A step of a globally limited queue finished: other nodes may now claim (NOTIFY them). */
  onGlobalSlotFreed?: () => void;
  /** Rows of this queue were given back to the database: other nodes may take them (NOTIFY them). */
  onGivenBack: () => void;
  machines: string[];
  nodeId: string;
  leaseMs: number;
  pool: pg.Pool;
  claims: ClaimQueries;
  executor: Executor;
  leases: Leases;
  events: TypedEmitter;
  /** A claim failed (reported and logged by the engine; the scheduler retries shortly). */
  onError: (loop: string, error: unknown) => void;
}

export class QueueScheduler {
  /** Steps whose code is running. */
  private running = 0;
  /** Steps whose code settled and whose outcome is being committed. */
  private committing = 0;
  /** Claimed rows waiting for a slot. */
  private buffer: ClaimedRow[] = [];
  /** Buffered rows whose step draws rate-limit tokens first (see EARLY_DRAW_WINDOW_MS). */
  private bufferedDraws = 0;
  /** Rows launched before a slot was free (drawing their tokens, or waiting for a slot). */
  private early = 0;
  /** Early rows that have their tokens and wait for a slot, in order, and since when (performance.now()). */
  private slotWaiters: Array<{ grant: (granted: boolean) => void; since: number }> = [];
  /** When each row claimed ahead entered the buffer (performance.now()), by instance id. */
  private readonly bufferedAt = new Map<string, number>();
  private staleCheck: NodeJS.Timeout | undefined;
  /** Set when rows were given back: nothing is claimed ahead until a running step settles. */
  private slotsStuck = false;
  private claiming = false;
  /** The claim statement in flight: stop() waits for it to settle. */
  private claimInFlight: Promise<unknown> | undefined;
  /** Set by every wake-up; cleared when a claim comes back short (nothing more is due). */
  private mayHaveMore = true;
  /** Free slots the claim in flight was told of: its rows charged to start now take them, not buffered ones. */
  private reserved = 0;
  /** Steps launched since the pace was last sampled, when that was, and the smoothed pace (steps/s). */
  private launches = 0;
  private paceSampledAt = performance.now();
  private pace = 0;
  private stopped = true;
  private fillScheduled = false;
  /** Callers of wakeThen waiting for the claim their wake-up leads to (or to learn none goes out). */
  private afterClaim: Array<() => void> = [];
  private readonly inFlight = new Set<Promise<void>>();
  private readonly timers = new Set<LongTimeout>();

  constructor(private readonly o: QueueSchedulerOptions) {}

  start(): void {
    this.stopped = false;
    this.wake();
  }

  /**
   * Stops claiming and launching; buffered rows stay leased until the engine releases them.
   * Resolves once the claim in flight, if any, has come back: its rows are leased by then, so the
   * engine's release at the end of its stop gives them back too (otherwise they would wait, leased
   * by a stopped node, for their lease to expire).
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.buffer = [];
    this.bufferedDraws = 0;
    this.bufferedAt.clear();
    // Given back unstarted by their executors (Executor.giveBack), like the buffer's rows.
    for (const waiter of this.slotWaiters.splice(0)) waiter.grant(false);
    clearTimeout(this.staleCheck);
    this.staleCheck = undefined;
    for (const timer of this.timers) timer.clear();
    this.timers.clear();
    this.tellAfterClaim();
    await this.claimInFlight?.catch(() => {}); // a failed claim is fill()'s to report
  }

  /** Resolves when every launched step has committed (or given up). */
  async settled(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.allSettled([...this.inFlight]);
  }

  /** Something may be due now (or after `delayMs`). */
  wake(delayMs = 0): void {
    if (this.stopped) return;
    if (delayMs > 0) {
      // The delay of a step's run time may exceed Node's largest timer: setLongTimeout waits in chunks.
      const timer = setLongTimeout(
        () => {
          this.timers.delete(timer);
          this.wake();
        },
        delayMs,
        { unref: true },
      );
      this.timers.add(timer);
      return;
    }
    this.mayHaveMore = true;
    this.scheduleFill();
  }

  /**
   * Wakes the scheduler now; `after` runs once the claim this wake-up leads to has come back
   * (its rows leased), or as soon as it is clear that no claim goes out (no room, or stopped).
   */
  wakeThen(after: () => void): void {
    if (this.stopped) return after();
    this.afterClaim.push(after);
    this.wake();
  }

  /** Runs the wakeThen callbacks that wait. */
  private tellAfterClaim(told = this.afterClaim): void {
    if (told === this.afterClaim) this.afterClaim = [];
    for (const after of told) after();
  }

  /** Coalesces the wake-ups and freed slots of one event-loop turn into one claim. */
  private scheduleFill(): void {
    if (this.fillScheduled) return;
    this.fillScheduled = true;
    setImmediate(() => {
      this.fillScheduled = false;
      this.launchBuffered();
      void this.fill();
    });
  }

  /** How many more rows this node should hold (rowsWanted). */
  private get wanted(): number {
    // No claim-ahead under a global limit: a buffered row would hold a global slot idle.
    const ahead = this.o.global === undefined && !this.slotsStuck ? this.aheadSize() : 0;
    const held = this.running + this.early + this.buffer.length;
    return rowsWanted({ concurrency: this.o.concurrency, ahead, committing: this.committing, held });
  }

  /** The claim-ahead buffer's size: about AHEAD_WINDOW_MS of work at this node's pace. */
  private aheadSize(): number {
    const now = performance.now();
    const { concurrency } = this.o;
    const pace = sampledPace({
      pace: this.pace,
      launches: this.launches,
      elapsed: now - this.paceSampledAt,
      concurrency,
    });
    if (pace !== undefined) {
      this.pace = pace;
      this.launches = 0;
      this.paceSampledAt = now;
    }
    return Math.min(MAX_AHEAD, Math.max(concurrency, Math.round((this.pace * AHEAD_WINDOW_MS) / 1000)));
  }

  private async fill(): Promise<void> {
    // A claim going on tells the wakeThen callers once its loop is over; a stopped one told them.
    if (this.claiming || this.stopped) return;
    this.claiming = true;
    try {
      while (!this.stopped && this.mayHaveMore && this.wanted > 0) {
        const want = this.wanted;
        // A slot is free only when nothing buffered is waiting for one.
        const freeSlots = Math.max(0, this.o.concurrency - this.running);
        this.mayHaveMore = false;
        const started = performance.now();
        this.reserved = freeSlots;
        // Woken before this claim went out: told once it is back (a claim already out when they
        // woke it may predate their rows, and the loop claims again for them).
        const told = this.afterClaim;
        this.afterClaim = [];
        let rows: ClaimedRow[];
        try {
          rows = await (this.claimInFlight = this.claim(want, freeSlots));
        } finally {
          this.reserved = 0;
          this.claimInFlight = undefined;
          this.tellAfterClaim(told);
        }
        this.o.events.emit("loop:tick", {
          loop: "scheduler",
          queue: this.o.queue,
          durationMs: performance.now() - started,
          count: rows.length,
        });
        if (rows.length === want) this.mayHaveMore = true;
        // Rows charged for the free slots first (keyed ones among them), then those claimed ahead.
        const order = (row: ClaimedRow) => (row.claimed_ahead ? 2 : row.concurrency_key !== null ? 0 : 1);
        const startNow: ClaimedRow[] = [];
        for (const row of rows.sort((a, b) => order(a) - order(b))) {
          // Leased from now on: renewed while it waits, released if the node stops first.
          this.o.leases.add(row.id, { token: row.claim_token, queue: row.queue, attempt: new StepAbort() });
          if (row.claimed_ahead) {
            this.buffer.push(row);
            this.bufferedAt.set(row.id, performance.now());
            if (this.o.executor.drawsTokens(row)) this.bufferedDraws++;
          } else startNow.push(row);
        }
        // Those for the free slots go ahead of rows claimed ahead earlier: they take those slots now.
        this.buffer.unshift(...startNow);
        this.launchBuffered();
        this.watchBuffer();
      }
    } catch (error) {
      this.o.onError(`scheduler:${this.o.queue}`, error);
      // Try again shortly rather than waiting for the next poll.
      this.mayHaveMore = true;
      this.wake(250);
    } finally {
      this.claiming = false;
      // No claim goes out for those still waiting: nothing more is wanted.
      this.tellAfterClaim();
    }
  }

  /**
   * Claims up to `want` rows, the first `startNow` of them charged for free slots. Keyed rows are
   * claimed ahead like the others: a buffered keyed row holds its key while it waits, which the
   * buffer's size (about AHEAD_WINDOW_MS of work) and its give-back (BUFFER_WAIT_MAX_MS) bound.
   */
  private async claim(want: number, startNow: number): Promise<ClaimedRow[]> {
    const { queue, machines, nodeId, leaseMs, global, claims } = this.o;
    const args = { queue, machines, want, nodeId, leaseMs, global: global ?? null, startNow, keyedAtMost: want };
    if (global === undefined) return (await claims.claim(this.o.pool, args)).rows;
    // Under a global limit the count of running rows and the claim must not interleave with
    // another node's: the queue's advisory lock serialises them for this transaction.
    return withTransaction(this.o.pool, async (client) => {
      await claims.lockQueue(client, { queue });
      return (await claims.claim(client, args)).rows;
    });
  }

  /** Launches buffered rows into free slots (rows for slots their claim charged are at the head). */
  private launchBuffered(): void {
    const slots = this.o.concurrency - this.reserved;
    // Early rows that have their tokens go first: they were ahead of the buffer's rows.
    while (!this.stopped && this.slotWaiters.length > 0 && this.running < slots) {
      this.early--;
      this.running++;
      this.launches++;
      this.slotWaiters.shift()!.grant(true);
    }
    while (!this.stopped && this.buffer.length > 0 && this.running < slots) {
      this.launch(this.unbuffer(0));
    }
    this.launchEarly();
  }

  /** Takes the row at `index` out of the buffer. */
  private unbuffer(index: number): ClaimedRow {
    // shift() at the head, which V8 does without moving the rest of the array.
    const row = index === 0 ? this.buffer.shift()! : this.buffer.splice(index, 1)[0]!;
    this.bufferedAt.delete(row.id);
    if (this.o.executor.drawsTokens(row)) this.bufferedDraws--;
    return row;
  }

  /**
   * Launches buffered rows whose step draws tokens before a slot is free (EARLY_DRAW_WINDOW_MS):
   * their draws are then in flight while the running steps finish.
   */
  private launchEarly(): void {
    if (this.stopped || this.bufferedDraws === 0 || this.slotsStuck) return;
    const atPace = Math.round((this.pace * EARLY_DRAW_WINDOW_MS) / 1000);
    let room = Math.min(EARLY_DRAW_MAX * this.o.concurrency, atPace) - this.early;
    for (let i = 0; room > 0 && this.bufferedDraws > 0 && i < this.buffer.length;) {
      if (this.o.executor.drawsTokens(this.buffer[i]!)) {
        this.launch(this.unbuffer(i), true);
        room--;
      } else i++;
    }
  }

  /** An early row has its tokens: it waits for a slot (granted by launchBuffered), or is refused one. */
  private slotFor(): Promise<boolean> {
    if (this.stopped) return Promise.resolve(false);
    return new Promise((grant) => {
      this.slotWaiters.push({ grant, since: performance.now() });
      this.launchBuffered();
      this.watchBuffer();
    });
  }

  /** While rows wait in the buffer, looks now and then for rows that waited too long. */
  private watchBuffer(): void {
    if (this.staleCheck || this.stopped || (this.bufferedAt.size === 0 && this.slotWaiters.length === 0)) return;
    this.staleCheck = setTimeout(() => {
      this.staleCheck = undefined;
      this.giveBackStale();
      this.watchBuffer();
    }, BUFFER_WAIT_MAX_MS / 4);
    this.staleCheck.unref();
  }

  /**
   * Gives back the rows that waited in the buffer longer than BUFFER_WAIT_MAX_MS: every slot is
   * taken by steps slower than the pace they were claimed at (or hung), and another node may be
   * idle. Until one of those steps settles, this node claims only into free slots.
   */
  private giveBackStale(): void {
    const now = performance.now();
    // Early rows refused a slot are given back by their executors, their tokens spent.
    const waited = this.slotWaiters.filter((waiter) => now - waiter.since > BUFFER_WAIT_MAX_MS);
    if (waited.length > 0) {
      this.slotWaiters = this.slotWaiters.filter((waiter) => !waited.includes(waiter));
      for (const waiter of waited) waiter.grant(false);
      this.slotsStuck = true;
    }
    const stale = this.buffer.filter((row) => now - (this.bufferedAt.get(row.id) ?? now) > BUFFER_WAIT_MAX_MS);
    if (stale.length === 0) return;
    const leaving = new Set(stale);
    this.buffer = this.buffer.filter((row) => !leaving.has(row));
    for (const row of stale) {
      this.bufferedAt.delete(row.id);
      if (this.o.executor.drawsTokens(row)) this.bufferedDraws--;
    }
    this.slotsStuck = true;
    const claims = stale.map((row) => ({ id: row.id, token: row.claim_token }));
    this.o.leases.giveBack(claims).then(
      () => this.o.onGivenBack(),
      (error: unknown) => this.o.onError(`scheduler:${this.o.queue}`, error),
    );
  }

  /** Starts a row in a free slot, or `early`: before one is free, to draw its tokens (launchEarly). */
  private launch(row: ClaimedRow, early = false): void {
    let slotted = !early;
    if (early) this.early++;
    else {
      this.running++;
      this.launches++;
    }
    let settled = false;
    /** Its slot is free again (or, an early row that never got one, it leaves `early`). */
    const leave = () => {
      if (!slotted) return void this.early--;
      this.running--;
      this.slotsStuck = false;
    };
    const onSettled = () => {
      if (settled) return;
      settled = true;
      leave();
      this.committing++;
      this.scheduleFill();
    };
    // launchBuffered moves it from `early` to `running` as it grants the slot.
    const slot = early ? () => this.slotFor().then((granted) => (slotted = granted)) : undefined;
    const task = this.o.executor.execute(row, onSettled, slot).finally(() => {
      // A keyed row's outcome has committed and freed its key only now: the claim made when its
      // code settled found the key still held, so the key's next instance would wait for the poll.
      if (row.concurrency_key !== null) this.mayHaveMore = true;
      if (settled) this.committing--;
      else leave();
      this.o.onGlobalSlotFreed?.();
      this.inFlight.delete(task);
      this.scheduleFill();
    });
    this.inFlight.add(task);
  }
}
