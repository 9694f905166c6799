/**
 * drain: run everything that is due now on one engine, until it is idle.
 *
 * Idle means, in one consistent snapshot of the database taken while the
 * engine holds no claim: no probe in PENDING finds work. Every kind of due
 * work leaves a trace in the database until it is done (a runnable row, an
 * await past its deadline, an expired lease, an uncounted finished child...),
 * so a snapshot without any, with nothing claimed, cannot be followed by more
 * work unless someone inserts or signals. Work that no probe sees because it
 * is not a row yet (a cron tick, a GC pass) is covered by waiting for two
 * ticks of every background loop: the second one started after drain woke it.
 *
 * Limits, by design: drain waits only for work this engine can run (its
 * queues and machines, queues not paused). Due work blocked by another node
 * (its concurrency key held there, a global queue limit full) makes drain time
 * out, with the message saying what is still pending.
 */
import type { GenDurable } from "../engine.js";
import { describe, toMs, type Duration } from "../duration.js";
import { GenDurableError, ValidationError } from "../errors.js";
import type { LoopName } from "../events.js";
import { PENDING, pendingProbe } from "../sql/pending.js";
import { rejectUnknownKeys } from "../suggest.js";
import { testingHook, type TestingHook } from "./hook.js";

/** Options of `drain`. */
export interface DrainOptions {
  /** Give up after this long. Default "30s". */
  timeout?: Duration;
}

/** What ran while drain waited (events of this engine). */
export interface DrainResult {
  /** Committed step attempts (step:stop), failed ones included. */
  steps: number;
  /** Failed attempts (step:exception): thrown, invalid outcome, timeout. */
  errors: number;
  /** Instances that finished `done` (instance:done). */
  done: number;
  /** Instances that ended `failed` (instance:failed). */
  failed: number;
  /** Instances a step cancelled with `ctx.cancel` (instance:cancelled). */
  cancelled: number;
}

/** drain gave up: something was still pending at the deadline (named in the message). */
export class DrainTimeoutError extends GenDurableError {
  /** The probes that still found work, e.g. { runnable: 2 }. */
  readonly pending: Readonly<Record<string, number>>;
  constructor(message: string, pending: Record<string, number>) {
    super("WAIT_TIMEOUT", message);
    this.pending = pending;
  }
}

/** The loops that report loop:tick (events.ts LoopName, less the per-queue scheduler). */
const TICKING: ReadonlySet<string> = new Set([
  "reaper",
  "lease",
  "timeouts",
  "joins",
  "gc",
  "cron",
] satisfies LoopName[]);

/**
 * Runs everything due now on `engine` until it is idle, then resolves with
 * what ran; rejects with DrainTimeoutError after `timeout`. The engine must
 * be started with queues. Delays, timeouts and backoff that are not due yet
 * stay pending: move time with advanceTime() first.
 */
export async function drain(engine: GenDurable, options: DrainOptions = {}): Promise<DrainResult> {
  const hook = testingHook(engine);
  if (!hook)
    throw new ValidationError(`drain: the first argument must be a GenDurable engine, got ${describe(engine)}`);
  if (typeof options !== "object" || options === null)
    throw new ValidationError(`drain: options must be an object such as { timeout: "10s" }, got ${describe(options)}`);
  rejectUnknownKeys(options, ["timeout"], "drain", (m) => new ValidationError(m));
  const timeoutMs = toMs(options.timeout ?? "30s", "drain: timeout", (m) => new ValidationError(m));
  if (!hook.running)
    throw new ValidationError(
      `drain: the engine is not running: start() it, with queues and machines, before draining`,
    );

  const counts: DrainResult = { steps: 0, errors: 0, done: 0, failed: 0, cancelled: 0 };
  const ticks = new Map<string, number>();
  const lastError = new Map<string, unknown>();
  const ticking = hook.loops.filter((loop) => TICKING.has(loop));
  const lagging = () => ticking.filter((loop) => (ticks.get(loop) ?? 0) < 2);
  let poke: () => void = () => {};
  const offs = [
    engine.on("step:stop", () => (counts.steps++, poke())),
    engine.on("step:exception", () => counts.errors++),
    engine.on("instance:done", () => counts.done++),
    engine.on("instance:failed", () => counts.failed++),
    engine.on("instance:cancelled", () => counts.cancelled++),
    engine.on("loop:tick", (e) => {
      const seen = (ticks.get(e.loop) ?? 0) + 1;
      ticks.set(e.loop, seen);
      if (seen <= 2 && TICKING.has(e.loop)) poke();
    }),
    engine.on("engine:error", (e) => lastError.set(e.loop, e.error)),
  ];
  const sql = pendingProbe(hook.schema);
  const deadline = Date.now() + timeoutMs;
  try {
    for (let pause = 1; ; pause = Math.min(pause * 2, 50)) {
      // While steps run, their commits wake what follows; the loops are woken once the engine is quiet.
      if (hook.inFlight() === 0) {
        if (lagging().length === 0) {
          const pending = await probe(hook, sql);
          if (Object.keys(pending).length === 0 && hook.inFlight() === 0) return counts;
        }
        hook.wake();
      }
      if (Date.now() >= deadline) throw timeoutError(timeoutMs, hook, await probe(hook, sql), lagging(), lastError);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, Math.min(pause, Math.max(0, deadline - Date.now())));
        poke = () => (clearTimeout(timer), resolve());
      });
      poke = () => {};
    }
  } finally {
    for (const off of offs) off();
  }
}

async function probe(hook: TestingHook, sql: ReturnType<typeof pendingProbe>): Promise<Record<string, number>> {
  const { rows } = await sql(hook.pool, { queues: hook.queues, machines: hook.machines, nodeId: hook.nodeId });
  return Object.fromEntries(Object.entries(rows[0]!).filter(([, n]) => n > 0));
}

function timeoutError(
  timeoutMs: number,
  hook: TestingHook,
  pending: Record<string, number>,
  lagging: string[],
  lastError: Map<string, unknown>,
): DrainTimeoutError {
  const parts = Object.entries(pending).map(
    ([name, n]) => `${n === 1000 ? "1000+" : n} ${PENDING.find((p) => p.name === name)!.what}`,
  );
  if (hook.inFlight() > 0) parts.push(`${hook.inFlight()} steps still running on this engine`);
  for (const loop of lagging) {
    const error = lastError.get(loop);
    const cause = error ? ` (its last error: ${error instanceof Error ? error.message : String(error)})` : "";
    parts.push(`the ${loop} loop has not completed a tick${cause}`);
  }
  return new DrainTimeoutError(
    `drain: not idle after ${timeoutMs} ms: ${parts.join("; ") || "work kept arriving"}`,
    pending,
  );
}
