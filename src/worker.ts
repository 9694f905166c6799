/**
 * The part of an engine that runs work: a scheduler per queue feeding one executor, the
 * background loops (src/loops/), cron and the LISTEN connection. A GenDurable with queues
 * starts one in start(); a pure client (no queues) never has one.
 */
import type pg from "pg";
import type { ResolvedConfig } from "./config.js";
import type { ResolvedCronEntry } from "./cron/entries.js";
import { Listener } from "./db/listener.js";
import { reportPooledListen } from "./db/pooler.js";
import { EngineStoppedError } from "./errors.js";
import type { TypedEmitter } from "./events.js";
import { CronLoop } from "./loops/cron.js";
import type { Pruner } from "./loops/gc.js";
import { joinSweepLoop } from "./loops/joins.js";
import type { ClockWatch } from "./loops/clock-skew.js";
import type { EngineClock } from "./runtime/clock.js";
import { leaseLoop, type NodeInfo } from "./loops/lease.js";
import { Loop } from "./loops/loop.js";
import { pollLoop } from "./loops/poll.js";
import { reaperLoop } from "./loops/reaper.js";
import { QueueScheduler } from "./loops/scheduler.js";
import { tablesLoop } from "./loops/tables.js";
import { timeoutSweepLoop } from "./loops/timeouts.js";
import type { Completer } from "./runtime/completer.js";
import { Executor, type ExecutorDeps } from "./runtime/executor.js";
import type { Leases } from "./runtime/leases.js";
import type { Notifier } from "./runtime/notifier.js";
import type { RateLimiter } from "./runtime/rate-limits.js";
import type { Wakeups } from "./runtime/wakeups.js";
import type { Queries } from "./sql/index.js";
import { setLongTimeout, type LongTimeout } from "./timers.js";

export interface WorkerNodeDeps {
  pool: pg.Pool;
  config: ResolvedConfig;
  /** Every statement, by aggregate (src/sql/). */
  queries: Queries;
  events: TypedEmitter;
  notifier: Notifier;
  completer: Completer;
  leases: Leases;
  rateLimiter: RateLimiter;
  pruner: Pruner;
  wake: Wakeups;
  /** The engine's clock (ctx.now(); runtime/clock.ts). */
  clock: EngineClock;
  /** The node's clock against the database's, read at every heartbeat (loops/clock-skew.ts). */
  clockWatch: ClockWatch;
  cancelRemaining: ExecutorDeps["cancelRemaining"];
  /** A NOTIFY payload that is not a queue's: true when it was someone's (published values). */
  onNotify(payload: string): boolean;
  around: ExecutorDeps["around"];
  cron: readonly ResolvedCronEntry[];
  node: NodeInfo;
  reportError(loop: string, error: unknown): void;
  /** Waits for one part of stop(), giving up after a bound (see GenDurable.stop). */
  bounded(what: string, work: Promise<unknown> | undefined): Promise<void>;
}

/**
 * How the parts of a node say that work may be due (runtime/wakeups.ts): through its worker's
 * schedulers and loops when it has one, and to every node through NOTIFY (`notify`).
 */
export function nodeWakeups(worker: () => WorkerNode | undefined, notify: (queue: string) => void): Wakeups {
  return {
    queue: (queue, delayMs = 0) => worker()?.schedulers.get(queue)?.wake(delayMs),
    broadcast: (queue) => {
      const scheduler = worker()?.schedulers.get(queue);
      if (scheduler === undefined) return notify(queue);
      // The NOTIFY for the other nodes goes out once this node's own claim is back: sent beside
      // it, its commit and the listeners it woke shared a 2-core server with the claim, and an
      // insert on the worker's own engine started its step later (bench/README.md, "Figures
      // behind choices in the code"). When this node has no room, no claim goes out and it is
      // sent at once.
      scheduler.wakeThen(() => notify(queue));
    },
    joins: () => worker()?.loops.joins.trigger(),
    timeouts: (delayMs) => worker()?.loops.timeouts.triggerIn(delayMs),
  };
}

export type LoopName = "poll" | "timeouts" | "joins" | "lease" | "reaper" | "gc" | "tables";

export class WorkerNode {
  readonly schedulers = new Map<string, QueueScheduler>();
  /** Background loops: poll (wake schedulers), timeouts (await deadlines), joins (count finished children),
   * lease (renew), reaper (expired leases, inbox), gc (prune), tables (vacuum warnings). */
  readonly loops: Record<LoopName, Loop>;
  private readonly cron: CronLoop | undefined;
  private readonly listener: Listener;
  /** What stop() aborts unfinished steps with, so the executor tells a release from a failure. */
  private stopReason: EngineStoppedError | undefined;

  constructor(private readonly deps: WorkerNodeDeps) {
    const { pool, config, queries, events, wake, reportError: onError } = deps;
    const executor = new Executor({
      pool,
      clock: deps.clock,
      machines: config.machines,
      claims: queries.claims,
      signals: queries.signals,
      completer: deps.completer,
      leases: deps.leases,
      events,
      logger: config.logger,
      around: deps.around,
      maxPayloadBytes: config.maxPayloadBytes,
      wake,
      instances: queries.instances,
      children: queries.children,
      channel: config.channel,
      rateLimiter: deps.rateLimiter,
      stopReason: () => this.stopReason,
      published: queries.published,
      versions: queries.versions,
      cancelRemaining: deps.cancelRemaining,
      sqlApi: queries.sqlApi,
      idempotencyWindowMs: config.idempotencyWindowMs,
    });
    // Any queue may hold any machine (insert's `queue` option), so every scheduler claims every machine.
    const machines = [...config.machines.keys()];
    for (const [queue, { concurrency, global }] of machines.length > 0 ? config.queues : []) {
      const scheduler = new QueueScheduler({
        queue,
        concurrency,
        global,
        onGlobalSlotFreed: global === undefined ? undefined : () => deps.notifier.request(queue),
        onGivenBack: () => deps.notifier.request(queue),
        machines,
        nodeId: config.nodeId,
        leaseMs: config.leaseMs,
        pool,
        claims: queries.claims,
        executor,
        leases: deps.leases,
        events,
        onError,
      });
      this.schedulers.set(queue, scheduler);
    }
    const wakeAll = () => this.wakeSchedulers();
    const loopDeps = { pool, events, onError, wake };
    const { leases, flow } = { leases: deps.leases, flow: queries.flow };
    this.loops = {
      poll: pollLoop({ events, onError, queues: () => this.schedulers.size, wakeAll }, config.pollMs),
      timeouts: timeoutSweepLoop({ ...loopDeps, signals: queries.signals }, config.pollMs),
      joins: joinSweepLoop({ ...loopDeps, children: queries.children }, config.pollMs),
      lease: leaseLoop({ ...loopDeps, leases, flow, node: deps.node, clock: deps.clockWatch }),
      reaper: reaperLoop({ ...loopDeps, claims: queries.claims, signals: queries.signals, flow }, config.reaperMs),
      gc: new Loop({ name: "gc", intervalMs: config.gcMs, onError, tick: () => deps.pruner.tick() }),
      tables: tablesLoop({ ...loopDeps, schema: config.schema, logger: config.logger }),
    };
    if (deps.cron.length > 0) {
      const { schema, channel, maxPayloadBytes } = config;
      const entries = deps.cron;
      this.cron = new CronLoop({ pool, schema, entries, channel, maxPayloadBytes, events, onError, wake: wake.queue });
    }
    const application_name = "gen-durable-listen";
    const listenUrl = config.listenConnectionString ?? config.connectionString;
    const clientConfig: pg.ClientConfig = listenUrl
      ? { connectionString: listenUrl, application_name }
      : { ...(pool as unknown as { options: pg.ClientConfig }).options, application_name };
    this.listener = new Listener({
      clientConfig,
      channel: config.channel,
      heartbeatMs: config.listenerHeartbeatMs,
      onNotify: (payload) => deps.onNotify(payload) || this.schedulers.get(payload)?.wake(),
      onConnected: wakeAll,
      onError: (error) => onError("listener", error),
      onPooled: () => reportPooledListen(events, config.logger, config.pollMs),
    });
  }

  start(): void {
    for (const scheduler of this.schedulers.values()) scheduler.start();
    for (const loop of Object.values(this.loops)) loop.start();
    this.cron?.start();
    void this.listener.start();
  }

  wakeSchedulers(): void {
    for (const scheduler of this.schedulers.values()) scheduler.wake();
  }

  /** Ticks every loop and scheduler now (gen-durable/testing's drain and advanceTime). */
  wakeAll(): void {
    for (const loop of Object.values(this.loops)) loop.trigger();
    this.wakeSchedulers();
  }

  /**
   * Claims no more work; steps in flight get `shutdownGrace` to finish and commit; the rest are
   * aborted and their leases released at once (runnable again, attempt not counted). Leases keep
   * being renewed while in-flight steps finish; the other loops stop after their running tick.
   */
  async stop(): Promise<void> {
    const { bounded, config, leases, notifier } = this.deps;
    await Promise.all([...this.schedulers].map(([queue, s]) => bounded(`queue ${queue}'s claim in flight`, s.stop())));
    await bounded("the cron loop's tick", this.cron?.stop());
    const { lease, ...others } = this.loops;
    await Promise.all(Object.entries(others).map(([name, loop]) => bounded(`the ${name} loop's tick`, loop.stop())));
    const settled = Promise.all([...this.schedulers.values()].map((s) => s.settled()));
    let timer: LongTimeout | undefined;
    await Promise.race([
      settled,
      new Promise((resolve) => (timer = setLongTimeout(() => resolve(undefined), config.shutdownGraceMs))),
    ]);
    timer?.clear();
    this.stopReason = new EngineStoppedError();
    const released = await leases.releaseAll(this.stopReason).catch((error: unknown) => {
      this.deps.reportError("stop", error);
      return [] as string[];
    });
    for (const queue of released) notifier.request(queue);
    await bounded("steps to settle", settled);
    await bounded("the lease loop's tick", lease.stop());
    await bounded("the lease connection to close", leases.close());
    const unregister = this.deps.queries.flow
      .unregister(this.deps.pool, { id: config.nodeId })
      .catch((error: unknown) => this.deps.reportError("stop", error));
    await bounded("unregistering this node", unregister);
    await bounded("the listener to close", this.listener.stop());
  }
}
