/**
 * The latency phase: one job (or one signal) at a time into idle, started workers, every system's
 * samples taken in the same stretch of time, one system after the other in turn.
 *
 * Each system used to take its 1,000 samples in a stretch of its own, one system after the
 * other: a ratio of two p50s was then also a ratio of two moments of the host, and on a shared
 * 2-core host those moved by more than the engines differ (a round trip that follows 10 ms of
 * idleness cost 0.2 to 0.6 ms, by the minute). Interleaved, a slow minute slows every system's
 * samples alike. Each round takes the systems in an order of its own (a seeded shuffle, the same
 * in every run): whatever a system leaves running after its sample (its completion, a fetch of the
 * next jobs, a poll) lands on every other system's samples alike, where a fixed order (only the
 * first rotating) put it on the same neighbour's every time.
 */
import { percentile, round, sleep, withTimeout } from "./util.js";

/** One sample, in ms: the whole, the call alone (its transaction, committed), and the call's return → the first line. */
export interface Sample {
  total: number;
  call: number;
  after: number;
}

/** What the phase times: a system's insert→start, or gen-durable's signal→resume. */
export interface LatencyProbe {
  readonly name: string;
  /** Samples per path: it sits out the rounds after this many. */
  readonly count: number;
  /** From a separate producer (another client instance: across nodes, over NOTIFY). */
  separate(k: number): Promise<Sample>;
  /** Made on the worker's own instance. */
  sameNode(k: number): Promise<Sample>;
}

export interface ProbeSamples {
  separate: Sample[];
  sameNode: Sample[];
}

/**
 * Times `send` to the first line of its step, which calls the resolver `started` was made with:
 * from `performance.now()` just before the call, same process and clock.
 */
export async function timeOne(send: () => Promise<unknown>, started: Promise<number>, what: string): Promise<Sample> {
  const t0 = performance.now();
  await send();
  const t1 = performance.now();
  const at = await withTimeout(started, 30_000, `${what} never started`);
  return { total: at - t0, call: t1 - t0, after: at - t1 };
}

/**
 * Takes every probe's samples, the separate producers' first, then the same-node ones; after each
 * sample the harness waits 10 ms so that its outcome commits and the next one meets idle workers.
 */
export async function interleavedLatency(
  probes: readonly LatencyProbe[],
  onPath: (path: keyof ProbeSamples) => void = () => {},
): Promise<Map<LatencyProbe, ProbeSamples>> {
  const samples = new Map(probes.map((p) => [p, { separate: [], sameNode: [] } as ProbeSamples]));
  const rounds = Math.max(...probes.map((p) => p.count));
  // Let the workers settle: LISTEN connected, first (empty) claims and polls done.
  await sleep(1_000);
  for (const path of ["separate", "sameNode"] as const) {
    onPath(path);
    const random = seeded(path === "separate" ? 1 : 2);
    for (let k = 0; k < rounds; k++) {
      for (const probe of shuffled(probes, random)) {
        if (k >= probe.count) continue;
        samples.get(probe)![path].push(await probe[path](k));
        await sleep(10);
      }
    }
  }
  return samples;
}

/** A copy of `items` in random order (Fisher–Yates), drawn from `random`. */
function shuffled<T>(items: readonly T[], random: () => number): T[] {
  const order = [...items];
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** A small seeded generator of numbers in [0, 1) (mulberry32): the same orders in every run. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface LatencyStats {
  samples: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export function stats(values: number[]): LatencyStats {
  return {
    samples: values.length,
    p50: round(percentile(values, 50), 2),
    p90: round(percentile(values, 90), 2),
    p99: round(percentile(values, 99), 2),
    max: round(Math.max(...values), 2),
    mean: round(values.reduce((a, b) => a + b, 0) / values.length, 2),
  };
}
