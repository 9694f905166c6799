/**
 * GenDurable: the public face. Composes the pieces — scheduler per queue,
 * executor, group commit, leases, reaper, listener — and offers the client API
 * (insert, signal, inspect, cancel, retry). It holds no per-instance state:
 * every instance is a row, and any node may run any step.
 */
import type pg from "pg";
import { resolveConfig, type GenDurableOptions, type ResolvedConfig } from "./config.js";
import type { AnyMachine } from "./define.js";
import type { Duration } from "./duration.js";
import { openIdleConnections, openPool, poolIsolationCheck } from "./db/pool.js";
import { EngineStoppedError, InvalidStateError } from "./errors.js";
import { TypedEmitter, type EngineEventName, type EngineEvents } from "./events.js";
import { attachTelemetry, type Telemetry } from "./telemetry/index.js";
import { silentLogger } from "./logger.js";
import { Pruner, type PruneOptions, type PruneResult } from "./loops/gc.js";
import { ClockWatch } from "./loops/clock-skew.js";
import type { CheckedCron, CronEntry, ResolvedCronEntry } from "./cron/entries.js";
import { allSettledOrFirstError, checkBeforeStart, recordStart } from "./startup.js";
import { nodeWakeups, WorkerNode } from "./worker.js";
import type { AnySpec, CheckedSpecs, InsertArgs, InstanceOf, InstanceRef, MachinesOf } from "./machine-types.js";
import type { Instance, InsertResult, ListFilter, SignalOptions, SignalResult, Transition } from "./instance.js";
import { queriesFor, type Queries } from "./sql/index.js";
import { EngineClock } from "./runtime/clock.js";
import { Completer } from "./runtime/completer.js";
import type { Explanation } from "./runtime/explain.js";
import { cancelRemaining } from "./runtime/join-remaining.js";
import { Leases } from "./runtime/leases.js";
import { Notifier } from "./runtime/notifier.js";
import { PublishedWaiters, waitForEvent, type EventTarget } from "./runtime/published.js";
import { RateLimiter, type BucketState, type ConsumeOptions, type ConsumeResult } from "./runtime/rate-limits.js";
import { idOf, typedSignal, type SignalName, type SignalRest } from "./runtime/typed-client.js";
import { strandedError, type CheckReport, type MoveOptions } from "./runtime/versions.js";
import type { Wakeups } from "./runtime/wakeups.js";
import type { Claim } from "./sql/claims.js";
import type { ClientContext } from "./client/context.js";
import { SignalSender } from "./runtime/signals.js";
import { cancelInstance } from "./client/cancel.js";
import { cancelledClaims } from "./runtime/cancel-notice.js";
import { insertMany, insertOne } from "./client/inserts.js";
import { pausedQueues, setPaused } from "./client/queues.js";
import { explain, getInstance, history, listInstances, waitFor } from "./client/reads.js";
import { retryInstance } from "./client/retry.js";
import { sendSignal } from "./client/signal.js";
import { checkDefinitions, moveTo, strandedAtStart } from "./client/versions.js";
import { bounded } from "./timers.js";

/**
 * `Cron` is inferred from the `cron` option, so that each entry's `state` / `args` is checked against its
 * machine at compile time; write the type as plain `GenDurable`.
 */
export class GenDurable<const Cron extends readonly CronEntry[] = readonly CronEntry[]> {
  private readonly config: ResolvedConfig;
  private readonly pool: pg.Pool;
  private readonly ownsPool: boolean;
  /** Every statement, by aggregate (src/sql/). */
  private readonly sql: Queries;
  private readonly events = new TypedEmitter();
  private readonly notifier: Notifier;
  private readonly completer: Completer;
  private readonly leases: Leases;
  /** The node's clock against the database's, read at every heartbeat (warns when far off). */
  private readonly clockWatch: ClockWatch;
  /** ctx.now(): database time, plus the schema's skew (advanceTime); offset kept current by clockWatch. */
  private readonly clock = new EngineClock();
  private readonly pruner: Pruner;
  private readonly rateLimiter: RateLimiter;
  /** Callers of waitForEvent, woken by the NOTIFY of a commit that publishes. */
  private readonly publishedWaiters = new PublishedWaiters();
  /** Schedulers, executor and loops: started by start() on a node with queues (src/worker.ts). */
  private worker: WorkerNode | undefined;
  /** How the executor and the loops say that work may be due (see runtime/wakeups.ts). */
  private readonly wakeups: Wakeups;
  /** The cron entries with every value checked (asynchronous schemas in start()). */
  private cronEntries: readonly ResolvedCronEntry[] = [];
  /** Spans, metrics and event log lines; attached in start() so an SDK registered after construction is used. */
  private telemetry: Telemetry | undefined;
  private state: "new" | "starting" | "started" | "stopping" | "stopped" = "new";
  /** Refuses a caller's pool stricter than READ COMMITTED; once it passed. */
  private readonly checkPool: () => Promise<void>;
  /** What the client API (src/client/) works with. */
  private readonly client: ClientContext;

  constructor(options: GenDurableOptions & { cron?: Cron & CheckedCron<Cron> }) {
    const config = (this.config = resolveConfig(options));
    const notify = (queue: string) => this.notifier.request(queue);
    this.wakeups = nodeWakeups(() => this.worker, notify);
    const { events, clock } = this;
    const { pool, owned } = openPool(options, "GenDurable", "gen-durable", config.poolSize, config.idleConnections);
    this.pool = pool;
    this.ownsPool = owned;
    const sql = (this.sql = queriesFor(config.schema));
    this.notifier = new Notifier(pool, config.channel, (error) => this.reportError("notify", error));
    this.completer = new Completer(pool, sql.claims);
    this.leases = new Leases(pool, sql.claims, config.leaseMs);
    this.clockWatch = new ClockWatch({ events, logger: config.logger, node: config.nodeId, clock });
    this.rateLimiter = new RateLimiter(pool, sql.flow, config.rateLimits);
    const { schema, retentionMs, machines, idempotencyWindowMs } = config;
    const more = () => this.worker?.loops.gc.trigger();
    this.pruner = new Pruner({ pool, schema, retentionMs, idempotencyWindowMs, machines, events, more });
    this.checkPool = poolIsolationCheck(pool, owned);
    const notifyQueue = (queue: string) => (this.notifier.request(queue), this.notifier.drain());
    const assertUsable = () => this.assertUsable();
    const { wakeups: wake, checkPool } = this;
    // A quarter of the pool at most runs deliveries at once; concurrent signals beyond share them.
    const signals = new SignalSender(pool, sql.signals, Math.max(2, Math.floor(config.poolSize / 4)));
    const { notifier } = this;
    this.client = { pool, config, sql, events, wake, notifier, notifyQueue, assertUsable, checkPool, signals };
  }

  /** Subscribe to an engine event; returns a function that unsubscribes. */
  on<E extends EngineEventName>(event: E, listener: (payload: EngineEvents[E]) => void): () => void {
    return this.events.on(event, listener);
  }

  /** Checks the schema and, when this node has queues, starts its loops. */
  async start(): Promise<void> {
    if (this.state !== "new") throw new InvalidStateError(`start() was already called (engine is ${this.state})`);
    this.state = "starting";
    try {
      await this.prepareStart();
    } catch (error) {
      // Nothing runs yet: the engine is as new, and start() may be called again (say, once the
      // database is reachable).
      this.telemetry?.close();
      this.telemetry = undefined;
      this.state = "new";
      throw error;
    }
    if (this.config.queues.size > 0) this.startLoops();
    this.state = "started";
  }

  /** Everything start() checks and records before any loop runs (src/startup.ts). */
  private async prepareStart(): Promise<void> {
    const { pool, config, checkPool, clock, sql, pruner, leases, clockWatch } = this;
    this.cronEntries = await checkBeforeStart({ pool, config, checkPool, clock });
    this.telemetry = attachTelemetry({
      events: this.events,
      logger: config.logger,
      silent: config.logger === silentLogger,
      pool,
      schema: config.schema,
      queues: [...config.queues.keys()],
      options: config.telemetry,
      onError: (error) => this.reportError("telemetry", error),
    });
    // Before any loop claims one: instances parked at steps these definitions lack would burn their
    // attempts. Reported, not thrown: the node runs the rest.
    const strandedCheck = () =>
      strandedAtStart(this.client).then(
        (stranded) => void (stranded.length > 0 && this.reportError("check", strandedError(stranded))),
        (error: unknown) => this.reportError("check", error),
      );
    await allSettledOrFirstError([
      recordStart({ pool, config, sql, pruner, leases, clockWatch, node: this.node() }),
      config.queues.size > 0 ? strandedCheck() : undefined,
    ]);
    // Your own pool keeps what you configured it to.
    if (this.ownsPool) await openIdleConnections(pool, config.idleConnections);
  }

  private startLoops(): void {
    const { pool, config, events, notifier, completer, leases, rateLimiter, pruner, cronEntries: cron } = this;
    this.worker = new WorkerNode({
      ...{ pool, config, queries: this.sql, events, notifier, completer, leases, rateLimiter, pruner, cron },
      wake: this.wakeups,
      clock: this.clock,
      clockWatch: this.clockWatch,
      cancelRemaining: (parentId) => cancelRemaining(pool, this.sql.children, parentId, (id, r) => this.cancel(id, r)),
      onNotify: (payload) => this.publishedWaiters.onNotify(payload) || this.onCancelledNotice(payload),
      around: this.telemetry?.around,
      node: this.node(),
      reportError: (loop, error) => this.reportError(loop, error),
      bounded: (what, work) => this.bounded(what, work),
    });
    this.worker.start();
  }

  /**
   * Graceful stop: claims no more work; steps in flight get `shutdownGrace` to
   * finish and commit; the rest are aborted and their leases released at once
   * (runnable again, attempt not counted), so another node picks them up now.
   */
  async stop(): Promise<void> {
    if (this.state === "stopped" || this.state === "stopping") return;
    this.state = "stopping";
    await this.worker?.stop();
    // The heartbeat in start() may have opened the lease connection without a worker.
    await this.bounded("the lease connection to close", this.leases.close());
    await this.bounded("group commits to finish", this.completer.whenIdle());
    await this.bounded("notifications to go out", this.notifier.drain());
    this.telemetry?.close();
    this.state = "stopped";
    if (this.ownsPool) await this.bounded("the pool to close", this.pool.end());
  }

  /**
   * Waits for one part of stop(), at most one lease duration. Every part ends
   * by itself unless the database went silent (a dead network drops no
   * connection and answers no query): then stop() gives up on it rather than
   * hang the process, reporting what it left. Rows it still held are reaped by
   * other nodes after their leases expire, as after a crash.
   */
  private async bounded(what: string, work: Promise<unknown> | undefined): Promise<void> {
    const ms = this.config.leaseMs;
    const why = `stop() gave up waiting for ${what} after ${ms} ms (is the database reachable?)`;
    if (await bounded(work, ms)) this.reportError("stop", new Error(why));
  }

  // ---------------------------------------------------------------- clients (src/client/)

  /**
   * Inserts one instance. With a live `correlationKey` twin, inserts nothing and returns its id. The id
   * carries the machine in its type, so `wait` and `get` of it are typed.
   */
  async insert<M extends AnyMachine>(machine: M, ...[options]: InsertArgs<M>): Promise<InsertResult<M>> {
    return (await insertOne(this.client, machine, options)) as InsertResult<M>;
  }

  /** Inserts many instances in one statement (all or nothing); results in input order. */
  async insertMany<const T extends readonly AnySpec[]>(
    items: T & CheckedSpecs<T>,
    options: { client?: pg.ClientBase } = {},
  ): Promise<InsertResult<MachinesOf<T>>[]> {
    return (await insertMany(this.client, items, options)) as InsertResult<MachinesOf<T>>[];
  }

  /**
   * Sends `event` to an instance, by correlation key or `{ id }`; committed before it resolves. Given the
   * machine first, the event and payload are checked against its `signals` at compile time and before sending.
   */
  signal<M extends AnyMachine, E extends SignalName<M>>(
    machine: M,
    target: string | { id: string },
    event: E,
    ...rest: SignalRest<M, E>
  ): Promise<SignalResult>;
  signal(
    target: string | { id: string },
    event: string,
    payload?: unknown,
    options?: SignalOptions,
  ): Promise<SignalResult>;
  async signal(...args: unknown[]): Promise<SignalResult> {
    this.assertUsable();
    const typed = await typedSignal(args, this.config.machines);
    return sendSignal(this.client, typed.target, typed.event, typed.payload, typed.options, typed.check);
  }

  /** The instance by id, handle or `{ correlationKey }` (the live one, else the newest), or null. */
  get<
    R extends
      | InstanceRef
      | {
          /** The correlation key of the instance. */
          correlationKey: string;
        },
  >(target: R): Promise<InstanceOf<R> | null>;
  get(target: unknown): Promise<Instance | null> {
    return getInstance(this.client, idOf(target) as string | { correlationKey: string });
  }

  /**
   * The value instance `target` (an id, `{ id }` or `{ correlationKey }`) published as `key` with
   * `ctx.publish`: at once if it has, else as soon as the commit that publishes it lands.
   */
  waitForEvent(target: EventTarget, key: string, options: { timeout?: Duration } = {}): Promise<unknown> {
    this.assertUsable();
    const { pool, publishedWaiters: waiters } = this;
    return waitForEvent({ pool, q: this.sql.published, waiters, pollMs: this.config.pollMs }, target, key, options);
  }

  /** Instances, newest first; page with `after: lastId`. */
  list(filter: ListFilter = {}): Promise<Instance[]> {
    return listInstances(this.client, filter);
  }

  /** Every committed transition of the instance, oldest first. */
  history(id: string): Promise<Transition[]> {
    return history(this.client, id);
  }

  /** Why the instance is not running right now, in words and as data. */
  explain(id: string): Promise<Explanation> {
    return explain(this.client, id);
  }

  /** Resolves with the instance once it is terminal (done, failed or cancelled). */
  wait<R extends InstanceRef>(target: R, options?: { timeout?: Duration }): Promise<InstanceOf<R>>;
  wait(target: unknown, options: { timeout?: Duration } = {}): Promise<Instance> {
    return waitFor(this.client, idOf(target) as string, options);
  }

  /**
   * Terminal `cancelled` (no retry), with its live descendants. A step running
   * now is aborted and its outcome discarded.
   */
  async cancel(id: string, reason?: string, options: { client?: pg.ClientBase } = {}): Promise<void> {
    const { machine, reason: message, ids, claims, routed } = await cancelInstance(this.client, id, reason, options);
    if (ids.length === 0) return;
    this.wakeups.joins();
    // In a caller's transaction, which may still roll back, nothing here says it happened: the
    // notification its commit sends stops its running steps on every node (runtime/cancel-notice.ts).
    if (options.client) return;
    // Committed: its steps running here stop now, without waiting for that notification.
    this.abortCancelled(claims);
    // Routed to its onCancel step, it ends cancelled when that step has run.
    if (!routed) this.events.emit("instance:cancelled", { id, machine, reason: message });
  }

  /**
   * Aborts the steps of the claims a cancel took away, if they run here: those claims only, not
   * whatever runs here now (an instance routed to its onCancel step may have had that step claimed
   * here since the cancel committed; its token is greater).
   */
  private abortCancelled(claims: readonly Claim[]): void {
    for (const claim of claims) this.leases.abort(claim, new InvalidStateError(`instance ${claim.id} was cancelled`));
  }

  /** A cancel's notification (runtime/cancel-notice.ts): true when the payload was one. */
  private onCancelledNotice(payload: string): boolean {
    const claims = cancelledClaims(payload);
    if (claims === null) return false;
    this.abortCancelled(claims);
    return true;
  }

  /**
   * Live instances of this engine's machines parked at steps the definitions no longer have. start() reports
   * them (an `engine:error` from loop "check") before anything runs; `gen-durable check` exits non-zero.
   */
  check(): Promise<CheckReport> {
    return checkDefinitions(this.client);
  }

  /**
   * An operator's repair: moves an instance that is not running (runnable, awaiting or failed) to `step`,
   * with `state` when given, runnable now with fresh attempts; recorded in its history as "moved".
   */
  move(id: string, options: MoveOptions): Promise<void> {
    return moveTo(this.client, id, options);
  }

  /** This node, as its heartbeat row records it. */
  private node(): { id: string; machines: string[]; queues: string[]; leaseMs: number } {
    const { nodeId, machines, queues, leaseMs } = this.config;
    return { id: nodeId, machines: [...machines.keys()], queues: [...queues.keys()], leaseMs };
  }

  /**
   * Stops every node from claiming in `queue` (steps already running finish). Takes effect at each node's next claim.
   */
  pauseQueue(queue: string): Promise<void> {
    return setPaused(this.client, queue, true);
  }

  /** Lets every node claim in `queue` again, and wakes them. */
  resumeQueue(queue: string): Promise<void> {
    return setPaused(this.client, queue, false);
  }

  /** The paused queues. */
  pausedQueues(): Promise<string[]> {
    return pausedQueues(this.client);
  }

  /**
   * Takes `weight` tokens (default 1) from a rate limit's bucket (of `partition`),
   * the same buckets steps draw from, if it holds them. Never waits and never
   * goes into debt: `{ ok: false, retryAfterMs }` says when to try again.
   */
  async consume(name: string, options?: ConsumeOptions): Promise<ConsumeResult> {
    this.assertUsable();
    return this.rateLimiter.consume(name, options);
  }

  /** The state of a rate limit's buckets (or of every limit's), refilled to the database's now. For operators. */
  async rateLimitBuckets(name?: string): Promise<BucketState[]> {
    this.assertUsable();
    return this.rateLimiter.buckets(name);
  }

  /**
   * Deletes terminal instances past their retention (or `olderThan`), with
   * their history and signals, in batches of short transactions. Works on a
   * pure client. Resolves to how many rows of each kind were deleted.
   */
  async prune(options: PruneOptions = {}): Promise<PruneResult> {
    this.assertUsable();
    return this.pruner.prune(options);
  }

  /**
   * A failed instance runs its failed step again with fresh attempts. A child
   * keeps its parent's join waiting until it is terminal again (a parent that
   * joined but has not started its join step goes back to `joining`); refused
   * once the join step has started, and under a cancelled ancestor.
   */
  retry(id: string): Promise<void> {
    return retryInstance(this.client, id);
  }

  /**
   * @internal For gen-durable/testing (drain, advanceTime) only: what this node
   * runs, how many claims it holds, and `wake()` to tick every loop and
   * scheduler now (due work found by the database clock runs without waiting).
   */
  _testing() {
    const { pool, config, worker, clock } = this;
    const { schema, nodeId } = config;
    const queues = [...(worker?.schedulers.keys() ?? [])];
    const machines = [...config.machines.keys()];
    const loops = Object.keys(worker?.loops ?? {});
    const running = this.state === "started" && worker !== undefined;
    const inFlight = () => this.leases.held.size;
    return { pool, schema, nodeId, queues, machines, loops, running, inFlight, clock, wake: () => worker?.wakeAll() };
  }

  private reportError(loop: string, error: unknown): void {
    this.events.emit("engine:error", { loop, error });
    this.config.logger.error({ err: error, loop }, `gen-durable ${loop} error`);
  }

  private assertUsable(): void {
    if (this.state === "stopped") throw new EngineStoppedError();
  }
}
