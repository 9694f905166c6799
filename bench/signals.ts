/**
 * The signals phase (gen-durable only: neither graphile-worker nor pg-boss has
 * signals or awaits). Two figures:
 *
 *  - signal→resume latency on an idle engine: instances parked on
 *    `ctx.await("go", "resumed")`; one signal at a time, from
 *    `performance.now()` just before `engine.signal(key, "go")` to the first
 *    line of step "resumed" (same process, same clock). Measured once with the
 *    signal sent from a separate pure-client engine (the webhook on another
 *    node: the wake-up crosses over NOTIFY) and once from the worker's own
 *    engine (which can wake its own scheduler directly). Its samples are taken
 *    by the latency phase (latency.ts), interleaved with the peers' insert→start.
 *  - signals/s sustained: instances each awaiting a pack
 *    `{ event: "item", count }`; all signals sent round-robin over the
 *    instances by concurrent senders on a separate client engine. Rate =
 *    signals committed (every `signal()` resolved) per second; also the time
 *    until the last instance's "resumed" step started. Checked against the
 *    database afterwards: every instance done, every signal consumed.
 *
 * Runs in its own schema, with its own worker and client engines.
 */
import pg from "pg";
import { z } from "zod";
import { defineMachine, GenDurable, migrate } from "./engine.js";
import { stats, timeOne, type LatencyProbe, type LatencyStats, type ProbeSamples, type Sample } from "./latency.js";
import { round, runConcurrently, sleep, withTimeout } from "./util.js";

export interface SignalsParams {
  /** Signals per latency run (each to its own parked instance). */
  latencySignals: number;
  /** Worker concurrency (queue "default"). */
  concurrency: number;
  packInstances: number;
  packCount: number;
  senders: number;
}

export interface SignalsResult {
  schema: string;
  config: Record<string, unknown>;
  /** Signal sent from a separate client engine. */
  latency: SignalLatency;
  /** Signal sent from the worker's own engine. */
  latencySameNode: SignalLatency;
  sustained: {
    instances: number;
    packCount: number;
    signals: number;
    senders: number;
    /** Until every signal() call resolved (all committed). */
    sendMs: number;
    signalsPerSecond: number;
    /** Until the last instance's "resumed" step started. */
    allResumedMs: number;
    /** Latency of one signal() call under this load. */
    signalCall: LatencyStats;
    /**
     * Signal→resume under this load: for each instance, from the start of the last signal() call
     * to it (the one that completes its pack) to the first line of its "resumed" step.
     */
    resumeAfterLastSignal: LatencyStats;
    /** From the database: instances done, signals consumed, and resumed steps that saw `count` signals. */
    verified: { instancesDone: number; signalsConsumed: number; resumedWithFullPack: number; ok: boolean };
  };
}

export interface SignalLatency {
  /** just before signal() → first line of the resumed step: the figure. */
  resume: LatencyStats;
  /** The signal() call alone (its transaction, committed). */
  signalCall: LatencyStats;
  /** signal() resolved → first line of the resumed step (wake-up, claim, step start). */
  afterCommit: LatencyStats;
}

export const SIGNALS_SCHEMA = "bench_gen_durable_signals";

/** The signals phase, opened: its latency probe for the interleaved phase, then the sustained run. */
export interface SignalsBench {
  /** signal→resume, one signal at a time to an instance parked beforehand. */
  latencyProbe: LatencyProbe;
  /** The probe's samples, once the latency phase has taken them. */
  latencyDone(samples: ProbeSamples): void;
  /** The sustained run; the results, the latency figures included. */
  sustained(log: (line: string) => void): Promise<SignalsResult>;
  /** Stops the engines and drops the schema. */
  close(): Promise<void>;
}

export async function openSignalsBench(url: string, admin: pg.Pool, params: SignalsParams): Promise<SignalsBench> {
  const schema = SIGNALS_SCHEMA;
  const resumed = new Map<number, (t: number) => void>();
  let packsResumed = 0;
  let fullPacks = 0;
  let lastPackAt = 0;
  const packResumedAt = new Map<number, number>();

  const Waiter = defineMachine({
    name: "Waiter",
    state: z.object({ k: z.number() }),
    steps: {
      start: (ctx) => ctx.await("go", "resumed"),
      resumed: (ctx) => {
        const at = performance.now();
        resumed.get(ctx.state.k)?.(at);
        resumed.delete(ctx.state.k);
        return ctx.done();
      },
    },
  });
  const Packer = defineMachine({
    name: "Packer",
    state: z.object({ j: z.number() }),
    steps: {
      start: (ctx) => ctx.await({ event: "item", count: params.packCount }, "resumed"),
      resumed: (ctx) => {
        lastPackAt = performance.now();
        packResumedAt.set(ctx.state.j, lastPackAt);
        packsResumed++;
        if (ctx.awaited.length === params.packCount) fullPacks++;
        return ctx.done();
      },
    },
  });

  await admin.query(`drop schema if exists ${schema} cascade`);
  await migrate({ connectionString: url, schema });
  const client = new GenDurable({ connectionString: url, schema });
  const worker = new GenDurable({
    connectionString: url,
    schema,
    queues: { default: params.concurrency },
    machines: [Waiter, Packer],
  });
  const close = async () => {
    await worker.stop();
    await client.stop();
    await admin.query(`drop schema if exists ${schema} cascade`).catch(() => {});
  };
  await client.start();
  await worker.start();

  const countAwaiting = async (machine: string) =>
    (
      await admin.query<{ n: number }>(
        `select count(*)::int as n from ${schema}.instances where machine = $1 and status = 'awaiting'`,
        [machine],
      )
    ).rows[0]!.n;
  const waitAwaiting = async (machine: string, n: number) => {
    const deadline = performance.now() + 60_000;
    while ((await countAwaiting(machine)) < n) {
      if (performance.now() > deadline)
        throw new Error(`signals: ${n} ${machine} instances never all reached their await`);
      await sleep(20);
    }
  };

  // The instances the latency probe signals, parked before the phase starts: one for each signal
  // from the separate client (keys from 1,000,000), one for each from the worker's own engine.
  const separateKey = (k: number) => `wait:${1_000_000 + k}`;
  const sameNodeKey = (k: number) => `wait:${2_000_000 + k}`;
  const parked = Array.from({ length: params.latencySignals }, (_, k) => k);
  try {
    await client.insertMany(
      parked.flatMap((k) => [
        { machine: Waiter, state: { k: 1_000_000 + k }, correlationKey: separateKey(k) },
        { machine: Waiter, state: { k: 2_000_000 + k }, correlationKey: sameNodeKey(k) },
      ]),
    );
    await waitAwaiting("Waiter", 2 * params.latencySignals);
  } catch (error) {
    await close();
    throw error;
  }
  const one = (sender: GenDurable, key: string, k: number) =>
    timeOne(
      () => sender.signal(key, "go"),
      new Promise<number>((resolve) => resumed.set(k, resolve)),
      `the instance signalled at ${key}`,
    );
  const latencyProbe: LatencyProbe = {
    name: "gen-durable signal→resume",
    count: params.latencySignals,
    separate: (k) => one(client, separateKey(k), 1_000_000 + k),
    sameNode: (k) => one(worker, sameNodeKey(k), 2_000_000 + k),
  };
  let latency: SignalLatency | undefined;
  let latencySameNode: SignalLatency | undefined;
  const latencyOf = (samples: Sample[]): SignalLatency => ({
    resume: stats(samples.map((s) => s.total)),
    signalCall: stats(samples.map((s) => s.call)),
    afterCommit: stats(samples.map((s) => s.after)),
  });

  const sustained = async (log: (line: string) => void): Promise<SignalsResult> => {
    if (!latency || !latencySameNode) throw new Error("signals: the sustained run comes after the latency phase");
    // Nothing left awaiting: the packs count only their own instances.
    const settledBy = performance.now() + 30_000;
    while ((await countAwaiting("Waiter")) > 0 && performance.now() < settledBy) await sleep(20);

    // Sustained: every instance awaits a pack; signals go round-robin over the instances.
    const instances = params.packInstances;
    const total = instances * params.packCount;
    const parkPacks = async (prefix: string, n: number) => {
      await client.insertMany(
        Array.from({ length: n }, (_, j) => ({ machine: Packer, state: { j }, correlationKey: `${prefix}:${j}` })),
      );
      await waitAwaiting("Packer", n);
    };
    // A warm-up first, as in every other phase: the batched delivery (several signals in one
    // statement) runs here for the first time in the process, and cold it ran a third slower.
    const warmInstances = Math.max(1, Math.round(instances / 5));
    await parkPacks("warm", warmInstances);
    await runConcurrently(warmInstances * params.packCount, params.senders, async (k) => {
      await client.signal(`warm:${k % warmInstances}`, "item", { k });
    });
    const warmDeadline = performance.now() + 60_000;
    while (packsResumed < warmInstances) {
      if (performance.now() > warmDeadline) throw new Error(`signals: the warm-up's packs never all resumed`);
      await sleep(5);
    }
    packsResumed = 0;
    fullPacks = 0;
    packResumedAt.clear();
    await parkPacks("pack", instances);
    await sleep(500);
    log(
      `  gen-durable: ${total} signals to ${instances} instances awaiting packs of ${params.packCount}, ${params.senders} concurrent senders`,
    );
    const calls: number[] = [];
    const lastSignalAt = new Map<number, number>();
    const t0 = performance.now();
    await withTimeout(
      runConcurrently(total, params.senders, async (k) => {
        const started = performance.now();
        lastSignalAt.set(k % instances, started);
        await client.signal(`pack:${k % instances}`, "item", { k });
        calls.push(performance.now() - started);
      }),
      180_000,
      "signals: sustained sending",
    );
    const sendMs = performance.now() - t0;
    const deadline = performance.now() + 60_000;
    while (packsResumed < instances) {
      if (performance.now() > deadline)
        throw new Error(`signals: only ${packsResumed} of ${instances} pack instances resumed`);
      await sleep(5);
    }
    const allResumedMs = lastPackAt - t0;
    const afterLastSignal = [...packResumedAt].map(([j, at]) => at - lastSignalAt.get(j)!);
    // Verify from the database once every resumed step has committed.
    let instancesDone = 0;
    for (let tries = 0; tries < 200; tries++) {
      instancesDone = (
        await admin.query<{ n: number }>(
          `select count(*)::int as n from ${schema}.instances
           where machine = 'Packer' and correlation_key like 'pack:%' and status = 'done'`,
        )
      ).rows[0]!.n;
      if (instancesDone >= instances) break;
      await sleep(25);
    }
    const signalsConsumed = (
      await admin.query<{ n: number }>(
        `select count(*)::int as n from ${schema}.signals s join ${schema}.instances i on i.id = s.instance_id
         where i.machine = 'Packer' and i.correlation_key like 'pack:%' and s.event = 'item'
           and s.consumed_at is not null`,
      )
    ).rows[0]!.n;
    const ok = instancesDone === instances && signalsConsumed === total && fullPacks === instances;

    return {
      schema,
      config: {
        machines:
          `Waiter { start: ctx.await("go", "resumed"), resumed: ctx.done() }; ` +
          `Packer { start: ctx.await({ event: "item", count: ${params.packCount} }, "resumed"), resumed: ctx.done() }`,
        worker: `new GenDurable({ connectionString, schema, queues: { default: ${params.concurrency} }, machines: [Waiter, Packer] })`,
        client: "new GenDurable({ connectionString, schema }) — a pure client, default poolSize 10",
        signal: "engine.signal(correlationKey, event, payload) — by correlation key, as a webhook would",
      },
      latency,
      latencySameNode,
      sustained: {
        instances,
        packCount: params.packCount,
        signals: total,
        senders: params.senders,
        sendMs: round(sendMs, 1),
        signalsPerSecond: round(total / (sendMs / 1000)),
        allResumedMs: round(allResumedMs, 1),
        signalCall: stats(calls),
        resumeAfterLastSignal: stats(afterLastSignal),
        verified: { instancesDone, signalsConsumed, resumedWithFullPack: fullPacks, ok },
      },
    };
  };

  return {
    latencyProbe,
    latencyDone: (samples) => {
      latency = latencyOf(samples.separate);
      latencySameNode = latencyOf(samples.sameNode);
    },
    sustained,
    close,
  };
}
