/**
 * Timers of any length. Node's setTimeout holds at most 2^31 - 1 ms (about 24.8
 * days): a longer delay is replaced by 1 ms, with only a warning. Every timer
 * whose delay comes from an option or from user input (a step timeout, the
 * shutdown grace, a loop interval, a wake-up at a step's run time) goes through
 * setLongTimeout, which waits in chunks of at most that much.
 */

/** The largest delay setTimeout honours. */
export const MAX_TIMER_MS = 2 ** 31 - 1;

export interface LongTimeout {
  /** Cancels the timer, whichever chunk it is in; harmless after it fired. */
  clear(): void;
}

/**
 * Calls `callback` once after `delayMs`. A negative or NaN delay is 0; an
 * infinite one never fires. With `unref`, no chunk keeps the process alive.
 */
export function setLongTimeout(callback: () => void, delayMs: number, options: { unref?: boolean } = {}): LongTimeout {
  let handle: NodeJS.Timeout | undefined;
  let remaining = Number.isNaN(delayMs) ? 0 : Math.max(0, delayMs);
  const arm = () => {
    const chunk = Math.min(remaining, MAX_TIMER_MS);
    remaining -= chunk;
    handle = setTimeout(remaining > 0 ? arm : callback, chunk);
    if (options.unref) handle.unref();
  };
  if (remaining !== Infinity) arm();
  return { clear: () => clearTimeout(handle) };
}

/**
 * Waits for `work` at most `ms`; true when it gave up (the work goes on, unwatched). A part of a
 * graceful stop that the database never answers (a dead network drops no connection) must not
 * hang the process.
 */
export async function bounded(work: Promise<unknown> | undefined, ms: number): Promise<boolean> {
  if (!work) return false;
  let timer: LongTimeout | undefined;
  const gaveUp = await Promise.race([
    work.then(
      () => false,
      () => false,
    ),
    new Promise<boolean>((resolve) => (timer = setLongTimeout(() => resolve(true), ms))),
  ]);
  timer?.clear();
  return gaveUp;
}
