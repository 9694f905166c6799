/** Small helpers for the benchmark: timing, percentiles, formatting. */

export const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/**
 * Handler calls of a timed run, and the pause between two polls of the database's count: `slowMs`
 * while handlers are still being called, cut short by the `target`-th call, then `fastMs`. A plain
 * sleep of `slowMs` let a run end up to `slowMs` after its last commit: runs of about a second
 * then read in steps of 200 ms (9,350, 11,650 or 7,850 jobs/s for 10,000 jobs, nothing between).
 */
export class HandlerCalls {
  count = 0;
  private wake: (() => void) | undefined;

  constructor(private readonly target: number) {}

  /** A handler was called. */
  call(): void {
    if (++this.count >= this.target) this.wake?.();
  }

  async pause(slowMs = 200, fastMs = 5): Promise<void> {
    if (this.count >= this.target) return sleep(fastMs);
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.wake?.(), slowMs);
      this.wake = () => {
        clearTimeout(timer);
        this.wake = undefined;
        resolve();
      };
    });
  }
}

/**
 * Untimed work before a system's first measured run. A worker process does not reach its steady
 * pace at once: V8 compiles the hot paths and sizes its heap as it goes. gen-durable's Node CPU per
 * no-op job fell from 32–44 µs in its first run of 20,000 to 17–21 µs by its fourth, and its time
 * in the garbage collector from 7 to 2 µs a job, in a process where nothing ran before it
 * (bench/README.md, "Warm-up").
 *
 * Calls `round(jobs)` (enqueue that many, process them untimed, clean up; it returns the processing
 * ms) until `budgetMs` of processing is spent: the first round `first` jobs, each next one sized to
 * what is left of the budget at the pace seen so far (at least `first`, at most `most`), and `total`
 * jobs in all at most. A fast system thus gets many jobs, a slow one a few seconds of its own work.
 * Returns the jobs processed.
 */
export async function warmUp(
  round: (jobs: number) => Promise<number>,
  o: { budgetMs: number; first: number; most: number; total: number },
): Promise<number> {
  let jobs = 0;
  let ms = 0;
  let next = Math.min(o.first, o.total);
  while (next > 0) {
    ms += await round(next);
    jobs += next;
    const left = o.budgetMs - ms;
    if (left <= 0) break;
    next = Math.min(o.most, o.total - jobs, Math.max(o.first, Math.round((jobs / ms) * left)));
  }
  return jobs;
}

/** Rejects after `ms` so that a stuck system fails the run instead of hanging it. */
export function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no result after ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** The median of `values` (the mean of the middle two for an even count), to 3 digits. */
export function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return round(sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2, 3);
}

/** The run of median jobs/s (the lower middle one for an even count). */
export function medianRun<T extends { perSecond: number }>(runs: readonly T[]): T {
  const sorted = [...runs].sort((a, b) => a.perSecond - b.perSecond);
  return sorted[(sorted.length - 1) >> 1]!;
}

/** Nearest-rank percentile of an unsorted sample (p in 0..100). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length - 1, Math.max(0, rank - 1))]!;
}

export function round(value: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(value * f) / f;
}

/** 4100 → "4,100"; 2.345 → "2.35" (fewer digits for big numbers). */
export function fmt(value: number): string {
  if (!Number.isFinite(value)) return "n/a";
  if (Math.abs(value) >= 100) return Math.round(value).toLocaleString("en-US");
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return value.toFixed(2);
}

export function fmtRatio(ratio: number): string {
  if (!Number.isFinite(ratio)) return "n/a";
  return `${ratio >= 10 ? ratio.toFixed(1) : ratio.toFixed(2)}×`;
}

/** Runs `task(i)` for i in [0, count) with at most `concurrency` in flight. */
export async function runConcurrently(
  count: number,
  concurrency: number,
  task: (i: number) => Promise<void>,
): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < count) await task(next++);
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, lane));
}
