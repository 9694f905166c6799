/**
 * GenDurable: the public face. Composes the pieces — scheduler per queue,
 * executor, group commit, leases, reaper, listener — and offers the client API
 * (insert, signal, inspect, cancel, retry). It holds no per-instance state:
 * every instance is a row, and any node may run any step.
 */
import { EngineClock } from "./runtime/clock.js";
import { onCancelSteps } from "./runtime/routes.js";
import pg from "pg";
import { resolveConfig, type GenDurableOptions, type ResolvedConfig } from "./config.js";
import type { AnyMachine } from "./define.js";
import { describe, toMs, type Duration } from "./duration.js";
import { Listener } from "./db/listener.js";
import { isolationOf, isReadCommitted, openPool, withTransaction } from "./db/pool.js";
import { prepared } from "./db/prepared.js";
import {
  ConfigError,
  EngineStoppedError,
  InstanceTerminatedError,
  InvalidStateError,
  NotMigratedError,
  UnknownInstanceError,
  ValidationError,
  WaitTimeoutError,
} from "./errors.js";
import { TypedEmitter, type EngineEventName, type EngineEvents } from "./events.js";
import { attachTelemetry, type Telemetry } from "./telemetry/index.js";
import { silentLogger } from "./logger.js";
import { encodeJson, storableMessage } from "./json.js";
import { Loop } from "./loops/loop.js";
import { Pruner, type PruneOptions, type PruneResult } from "./loops/gc.js";
import { QueueScheduler } from "./loops/scheduler.js";
import { joinSweepLoop } from "./loops/joins.js";
import { heartbeat, leaseLoop } from "./loops/lease.js";
import { pollLoop } from "./loops/poll.js";
import { reaperLoop } from "./loops/reaper.js";
import { tablesLoop } from "./loops/tables.js";
import { timeoutSweepLoop } from "./loops/timeouts.js";
import type { Wakeups } from "./runtime/wakeups.js";
import { CronLoop } from "./loops/cron.js";
import { checkDeferredCron, type ResolvedCronEntry } from "./cron/entries.js";
import { flowQueries, type FlowQueries } from "./sql/flow.js";
import { RateLimiter, type BucketState, type ConsumeOptions, type ConsumeResult } from "./runtime/rate-limits.js";
import { currentVersion, LATEST_MIGRATION } from "./migrate.js";
import { checkId, checkKey, checkName } from "./names.js";
import { Completer } from "./runtime/completer.js";
import { STATUSES, TERMINAL } from "./status.js";
import type {
  Instance,
  InsertManyItem,
  InsertOptions,
  InsertResult,
  ListFilter,
  SignalOptions,
  SignalResult,
  Transition,
} from "./instance.js";
import { explainInstance, type Explanation } from "./runtime/explain.js";
import { Executor } from "./runtime/executor.js";
import { prepareInsert, type InsertRow } from "./runtime/insert.js";
import { Leases } from "./runtime/leases.js";
import { Notifier } from "./runtime/notifier.js";
import { deliverSignal } from "./runtime/signals.js";
import { claimQueries } from "./sql/claims.js";
import { instanceQueries } from "./sql/instances.js";
import { childQueries } from "./sql/children.js";
import { signalQueries } from "./sql/signals.js";
import { didYouMean, rejectUnknownKeys } from "./suggest.js";
import { setLongTimeout, type LongTimeout } from "./timers.js";

export class GenDurable {
  private readonly config: ResolvedConfig;
  private readonly pool: pg.Pool;
  private readonly ownsPool: boolean;
  private readonly q: ReturnType<typeof instanceQueries>;
  private readonly claims: ReturnType<typeof claimQueries>;
  private readonly signalsQ: ReturnType<typeof signalQueries>;
  private readonly childrenQ: ReturnType<typeof childQueries>;
  private readonly events = new TypedEmitter();
  private readonly notifier: Notifier;
  private readonly completer: Completer;
  private readonly leases: Leases;
  private readonly pruner: Pruner;
  private readonly flow: FlowQueries;
  private readonly rateLimiter: RateLimiter;
  private readonly schedulers = new Map<string, QueueScheduler>();
  /** How the executor and the loops say that work may be due (see runtime/wakeups.ts). */
  private readonly wakeups: Wakeups = {
    queue: (queue, delayMs = 0) => this.schedulers.get(queue)?.wake(delayMs),
    broadcast: (queue) => this.wakeQueue(queue),
    joins: () => this.loops?.joins.trigger(),
    timeouts: (delayMs) => this.loops?.timeouts.triggerIn(delayMs),
  };
  /** Background loops: poll (wake schedulers), timeouts (await deadlines), joins (count finished children), lease (renew), reaper (expired leases, inbox). */
  private loops:
    { poll: Loop; timeouts: Loop; joins: Loop; lease: Loop; reaper: Loop; gc: Loop; tables: Loop } | undefined;
  private listener: Listener | undefined;
  /** Fires the `cron` entries; on nodes with queues and cron entries only. */
  private cron: CronLoop | undefined;
  /** The cron entries with every value checked (asynchronous schemas in start()). */
  private cronEntries: readonly ResolvedCronEntry[] = [];
  /** Spans, metrics and event log lines; attached in start() so an SDK registered after construction is used. */
  private telemetry: Telemetry | undefined;
  private state: "new" | "starting" | "started" | "stopping" | "stopped" = "new";
  /** What stop() aborts unfinished steps with, so the executor tells a release from a failure. */
  private stopReason: EngineStoppedError | undefined;
  /** The check that a caller's pool runs READ COMMITTED (checkPool), once it passed or while it runs. */
  private poolChecked: Promise<void> | undefined;
  /** ctx.now(): database time, plus the schema's skew (advanceTime). Read at start. */
  private readonly clock = new EngineClock();

  constructor(options: GenDurableOptions) {
    this.config = resolveConfig(options);
    const { pool, owned } = openPool(options, "GenDurable", "gen-durable", this.config.poolSize);
    this.pool = pool;
    this.ownsPool = owned;
    this.q = instanceQueries(this.config.schema);
    this.claims = claimQueries(this.config.schema);
    this.signalsQ = signalQueries(this.config.schema);
    this.childrenQ = childQueries(this.config.schema);
    this.notifier = new Notifier(pool, this.config.channel, (error) => this.reportError("notify", error));
    this.completer = new Completer(pool, this.claims.complete);
    this.leases = new Leases(pool, this.claims, this.config.leaseMs);
    this.flow = flowQueries(this.config.schema);
    this.rateLimiter = new RateLimiter(pool, this.flow, this.config.rateLimits);
    const { schema, retentionMs, machines } = this.config;
    this.pruner = new Pruner({
      pool,
      schema,
      retentionMs,
      machines,
      events: this.events,
      more: () => this.loops?.gc.trigger(),
    });
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

  /** Everything start() checks and records before any loop runs. */
  private async prepareStart(): Promise<void> {
    // Values of asynchronous schemas could not be checked in the constructor: before anything runs.
    this.cronEntries = await checkDeferredCron(
      this.config.cron,
      this.config.maxPayloadBytes,
      (m) => new ConfigError(`GenDurable: ${m}`),
    );
    const version = await currentVersion(this.pool, this.config.schema);
    if (version < LATEST_MIGRATION) throw new NotMigratedError(this.config.schema, version, LATEST_MIGRATION);
    await this.checkPool();
    await this.clock.sync(this.pool, this.config.schema);
    this.telemetry = attachTelemetry({
      events: this.events,
      logger: this.config.logger,
      silent: this.config.logger === silentLogger,
      pool: this.pool,
      schema: this.config.schema,
      queues: [...this.config.queues.keys()],
      options: this.config.telemetry,
      onError: (error) => this.reportError("telemetry", error),
    });
    // Every pruner (any node, the CLI) must honour this engine's per-machine retention.
    await this.pruner.recordRetentions();
    if (this.config.queues.size > 0) await heartbeat({ leases: this.leases, flow: this.flow, node: this.node() });
  }

  private startLoops(): void {
    const { config } = this;
    const executor = new Executor({
      pool: this.pool,
      machines: config.machines,
      claims: this.claims,
      signals: this.signalsQ,
      completer: this.completer,
      leases: this.leases,
      events: this.events,
      logger: config.logger,
      around: this.telemetry?.around,
      maxPayloadBytes: config.maxPayloadBytes,
      wake: this.wakeups,
      instances: this.q,
      children: this.childrenQ,
      channel: config.channel,
      rateLimiter: this.rateLimiter,
      stopReason: () => this.stopReason,
      clock: this.clock,
    });
    // Any queue may hold any machine (insert's `queue` option), so every
    // scheduler claims every machine this node runs.
    const machines = [...config.machines.keys()];
    for (const [queue, { concurrency, global }] of config.queues) {
      if (machines.length === 0) continue;
      const scheduler = new QueueScheduler({
        queue,
        concurrency,
        global,
        onGlobalSlotFreed: global === undefined ? undefined : () => this.notifier.request(queue),
        machines,
        nodeId: config.nodeId,
        leaseMs: config.leaseMs,
        pool: this.pool,
        claims: this.claims,
        executor,
        leases: this.leases,
        events: this.events,
        onError: (loop, error) => this.reportError(loop, error),
      });
      this.schedulers.set(queue, scheduler);
      scheduler.start();
    }
    const onError = (loop: string, error: unknown) => this.reportError(loop, error);
    const wakeAll = () => {
      for (const scheduler of this.schedulers.values()) scheduler.wake();
    };
    const deps = { pool: this.pool, events: this.events, onError, wake: this.wakeups };
    this.loops = {
      poll: pollLoop({ events: this.events, onError, queues: () => this.schedulers.size, wakeAll }, config.pollMs),
      timeouts: timeoutSweepLoop({ ...deps, signals: this.signalsQ }, config.pollMs),
      joins: joinSweepLoop({ ...deps, children: this.childrenQ }, config.pollMs),
      lease: leaseLoop({ events: this.events, onError, leases: this.leases, flow: this.flow, node: this.node() }),
      reaper: reaperLoop({ ...deps, claims: this.claims, signals: this.signalsQ, flow: this.flow }, config.reaperMs),
      gc: new Loop({ name: "gc", intervalMs: config.gcMs, onError, tick: () => this.pruner.tick() }),
      tables: tablesLoop({ ...deps, schema: config.schema, logger: config.logger }),
    };
    for (const loop of Object.values(this.loops)) loop.start();
    if (this.cronEntries.length > 0) {
      const { pool, events, cronEntries: entries } = this;
      const { schema, channel, maxPayloadBytes } = config;
      this.cron = new CronLoop({
        pool,
        schema,
        entries,
        channel,
        maxPayloadBytes,
        events,
        onError,
        wake: (queue) => this.schedulers.get(queue)?.wake(),
      });
      this.cron.start();
    }
    const clientConfig: pg.ClientConfig = this.config.connectionString
      ? { connectionString: this.config.connectionString, application_name: "gen-durable-listen" }
      : { ...(this.pool as unknown as { options: pg.ClientConfig }).options, application_name: "gen-durable-listen" };
    this.listener = new Listener({
      clientConfig,
      channel: config.channel,
      heartbeatMs: config.listenerHeartbeatMs,
      onNotify: (queue) => this.schedulers.get(queue)?.wake(),
      onConnected: wakeAll,
      onError: (error) => this.reportError("listener", error),
    });
    void this.listener.start();
  }

  /**
   * Graceful stop: claims no more work; steps in flight get `shutdownGrace` to
   * finish and commit; the rest are aborted and their leases released at once
   * (runnable again, attempt not counted), so another node picks them up now.
   */
  async stop(): Promise<void> {
    if (this.state === "stopped" || this.state === "stopping") return;
    const wasStarted = this.state === "started";
    this.state = "stopping";
    for (const scheduler of this.schedulers.values()) await scheduler.stop();
    // Leases keep being renewed while in-flight steps finish. The others wait for a running tick.
    await this.bounded("the cron loop's tick", this.cron?.stop());
    const { lease, ...others } = this.loops ?? {};
    await Promise.all(
      Object.entries(others).map(([name, loop]) => this.bounded(`the ${name} loop's tick`, loop.stop())),
    );
    if (wasStarted) {
      const settled = Promise.all([...this.schedulers.values()].map((s) => s.settled()));
      let timer: LongTimeout | undefined;
      await Promise.race([
        settled,
        new Promise((resolve) => (timer = setLongTimeout(() => resolve(undefined), this.config.shutdownGraceMs))),
      ]);
      timer?.clear();
      this.stopReason = new EngineStoppedError();
      const released = await this.leases.releaseAll(this.stopReason).catch((error: unknown) => {
        this.reportError("stop", error);
        return [] as string[];
      });
      for (const queue of released) this.notifier.request(queue);
      await this.bounded("steps to settle", settled);
    }
    await this.bounded("the lease loop's tick", lease?.stop());
    await this.bounded("the lease connection to close", this.leases.close());
    if (wasStarted && this.config.queues.size > 0) {
      await this.bounded(
        "unregistering this node",
        this.pool
          .query(this.flow.unregister, [this.config.nodeId])
          .catch((error: unknown) => this.reportError("stop", error)),
      );
    }
    await this.bounded("the listener to close", this.listener?.stop());
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
    if (!work) return;
    let timer: LongTimeout | undefined;
    const gaveUp = await Promise.race([
      work.then(
        () => false,
        () => false,
      ),
      new Promise<boolean>((resolve) => (timer = setLongTimeout(() => resolve(true), this.config.leaseMs))),
    ]);
    timer?.clear();
    if (gaveUp)
      this.reportError(
        "stop",
        new Error(`stop() gave up waiting for ${what} after ${this.config.leaseMs} ms (is the database reachable?)`),
      );
  }

  // ---------------------------------------------------------------- clients

  /** Inserts one instance. With a live `correlationKey` twin, inserts nothing and returns its id. */
  async insert<M extends AnyMachine>(machine: M, options: InsertOptions<M>): Promise<InsertResult> {
    const { client, ...rest } = (options ?? {}) as InsertOptions<M> & { client?: pg.ClientBase };
    const [result] = await this.insertRows(
      [await prepareInsert(machine, rest, 0, "insert", this.config.maxPayloadBytes)],
      client,
    );
    return result!;
  }

  /** Inserts many instances in one statement (all or nothing); results in input order. */
  async insertMany(
    items: readonly InsertManyItem[],
    options: { client?: pg.ClientBase } = {},
  ): Promise<InsertResult[]> {
    if (!Array.isArray(items)) throw new ValidationError(`insertMany: items must be an array, got ${describe(items)}`);
    rejectUnknownKeys(options, ["client"], "insertMany", (m) => new ValidationError(m));
    const rows = await Promise.all(
      items.map((item: unknown, i) => {
        if (typeof item !== "object" || item === null)
          throw new ValidationError(
            `insertMany[${i}]: each item must be { machine, state | args, ...options }, got ${describe(item)}`,
          );
        const { machine, ...rest } = item as InsertManyItem;
        return prepareInsert(machine, rest, i, `insertMany[${i}]`, this.config.maxPayloadBytes);
      }),
    );
    return this.insertRows(rows, options.client);
  }

  private async insertRows(rows: InsertRow[], client: pg.ClientBase | undefined): Promise<InsertResult[]> {
    this.assertUsable();
    const results: Array<InsertResult | undefined> = new Array(rows.length);
    // A key repeated within the batch refers to the first row that carries it.
    const firstWithKey = new Map<string, number>();
    const unique = rows.filter((row) => {
      if (row.correlation_key === null) return true;
      if (firstWithKey.has(row.correlation_key)) return false;
      firstWithKey.set(row.correlation_key, row.idx);
      return true;
    });
    if (unique.some((row) => row.correlation_key !== null)) {
      const why =
        "an insert with a correlation key takes the signals kept for its key after locking the key, and a stricter snapshot misses those committed in between (they would stay in the inbox)";
      if (client) await assertReadCommitted(client, "insert", why);
      else await this.checkPool();
    }
    const runner = client ?? this.pool;
    const channel = client ? this.config.channel : null;
    let pending = unique;
    for (let round = 0; pending.length > 0; round++) {
      if (round === 10)
        throw new Error("insert: could not settle correlation keys after 10 rounds of concurrent inserts");
      const { rows: out } = await runner.query<{
        idx: number;
        id: string;
        inserted: boolean;
        queue: string;
        due: boolean;
      }>(prepared(this.q.insert, [JSON.stringify(pending), channel]));
      for (const row of out) {
        if (row.idx < 0) continue;
        results[row.idx] = { id: row.id, inserted: row.inserted };
        if (row.inserted && row.due && !client) this.wakeQueue(row.queue);
      }
      // Rows whose twin committed after this statement's snapshot: look again.
      pending = pending.filter((row) => results[row.idx] === undefined);
    }
    for (const row of rows) {
      if (results[row.idx] === undefined)
        results[row.idx] = { id: results[firstWithKey.get(row.correlation_key!)!]!.id, inserted: false };
    }
    return results as InsertResult[];
  }

  /** Sends `event` to an instance, by correlation key or `{ id }`; committed before it resolves. */
  async signal(
    target: string | { id: string },
    event: string,
    payload?: unknown,
    options: SignalOptions = {},
  ): Promise<SignalResult> {
    this.assertUsable();
    const bad = (m: string) => new ValidationError(`signal: ${m}`);
    rejectUnknownKeys(options ?? {}, ["client", "dedupKey", "ifMissing"], "signal", (m) => new ValidationError(m));
    if (typeof target === "string") checkKey(target, "the target correlation key", bad);
    else if (typeof target !== "object" || target === null || !("id" in target)) {
      throw bad(`target must be a correlation key (string) or { id }, got ${describe(target)}`);
    } else checkId(target.id, "id", bad);
    checkName(event, "event", bad);
    const payloadJson = encodeJson(payload ?? null, `signal "${event}" payload`, this.config.maxPayloadBytes);
    if (options.dedupKey !== undefined) checkKey(options.dedupKey, "dedupKey", bad);
    if (options.ifMissing !== undefined && options.ifMissing !== "error" && options.ifMissing !== "keep") {
      throw bad(`ifMissing must be "error" or "keep", got ${describe(options.ifMissing)}`);
    }
    const input = {
      target,
      event,
      payloadJson,
      dedupKey: options.dedupKey ?? null,
      keepIfMissing: options.ifMissing === "keep",
      inboxRetentionMs: this.config.signalRetentionMs,
      // NOTIFY inside the transaction: it goes out with the commit, one round trip fewer than after it.
      notifyChannel: this.config.channel,
    };
    if (options.client) {
      const why =
        "a signal locks its instance and then reads its mailbox, and a stricter snapshot misses an instance or signals committed in between (the signal would be kept in the inbox, or an await never resume)";
      await assertReadCommitted(options.client, "signal", why);
    }
    const delivered = options.client
      ? await deliverSignal(options.client, this.signalsQ, input)
      : await withTransaction(this.pool, (client) => deliverSignal(client, this.signalsQ, input));
    if (delivered.resumedQueue && !options.client) this.schedulers.get(delivered.resumedQueue)?.wake();
    return { signalId: delivered.signalId, instanceId: delivered.instanceId, duplicate: delivered.signalId === null };
  }

  /** The instance by id or `{ correlationKey }` (the live one, else the newest), or null. */
  async get(target: string | { correlationKey: string }): Promise<Instance | null> {
    this.assertUsable();
    const bad = (m: string) => new ValidationError(`get: ${m}`);
    if (typeof target === "object" && target !== null && "correlationKey" in target) {
      const { rows } = await this.pool.query(this.q.getByKey, [checkKey(target.correlationKey, "correlationKey", bad)]);
      return rows[0] ? toInstance(rows[0]) : null;
    }
    if (typeof target !== "string") throw bad(`expected an id or { correlationKey }, got ${describe(target)}`);
    const { rows } = await this.pool.query(this.q.get, [checkId(target, "id", bad)]);
    return rows[0] ? toInstance(rows[0]) : null;
  }

  /** Instances, newest first; page with `after: lastId`. */
  async list(filter: ListFilter = {}): Promise<Instance[]> {
    this.assertUsable();
    const bad = (m: string) => new ValidationError(`list: ${m}`);
    if (typeof filter !== "object" || filter === null)
      throw bad(`the filter must be an object, got ${describe(filter)}`);
    rejectUnknownKeys(
      filter,
      ["machine", "status", "queue", "correlationKey", "limit", "after"],
      "list",
      (m) => new ValidationError(m),
    );
    const limit = filter.limit ?? 100;
    if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
      throw bad(`limit must be an integer from 1 to 10000, got ${describe(filter.limit)}`);
    const statuses =
      filter.status === undefined ? null : Array.isArray(filter.status) ? filter.status : [filter.status];
    for (const status of statuses ?? []) {
      if (!STATUSES.includes(status)) {
        const suggestion = typeof status === "string" ? didYouMean(status, STATUSES) : "";
        throw bad(`status must be one of ${STATUSES.join(", ")}; got ${describe(status)}${suggestion}`);
      }
    }
    const { rows } = await this.pool.query(this.q.list, [
      filter.machine === undefined ? null : checkName(filter.machine, "machine", bad),
      statuses,
      filter.queue === undefined ? null : checkName(filter.queue, "queue", bad),
      filter.correlationKey === undefined ? null : checkKey(filter.correlationKey, "correlationKey", bad),
      filter.after === undefined ? null : checkId(filter.after, "after", bad),
      limit,
    ]);
    return rows.map(toInstance);
  }

  /** Every committed transition of the instance, oldest first. */
  async history(id: string): Promise<Transition[]> {
    this.assertUsable();
    checkId(id, "history: id", (m) => new ValidationError(m));
    const { rows } = await this.pool.query(this.q.history, [id]);
    return rows.map((r) => ({
      at: r.at,
      fromStep: r.from_step,
      toStep: r.to_step,
      outcome: r.outcome,
      attempt: r.attempt,
      durationMs: r.duration_ms,
      ...(r.error ? { error: r.error } : {}),
    }));
  }

  /** Why the instance is not running right now, in words and as data. */
  async explain(id: string): Promise<Explanation> {
    this.assertUsable();
    checkId(id, "explain: id", (m) => new ValidationError(m));
    const instance = await this.get(id);
    if (!instance) throw new UnknownInstanceError(id);
    return explainInstance(this.pool, this.config, instance, this.config.schema);
  }

  /** Resolves with the instance once it is terminal (done, failed or cancelled). */
  async wait(id: string, options: { timeout?: Duration } = {}): Promise<Instance> {
    checkId(id, "wait: id", (m) => new ValidationError(m));
    const timeoutMs =
      options.timeout === undefined ? undefined : toMs(options.timeout, "wait: timeout", (m) => new ValidationError(m));
    const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
    let pause = 10;
    for (;;) {
      const instance = await this.get(id);
      if (!instance) throw new UnknownInstanceError(id);
      if (TERMINAL.has(instance.status)) return instance;
      if (Date.now() >= deadline) throw new WaitTimeoutError(id, timeoutMs!);
      await this.nextChange(id, Math.min(pause, deadline - Date.now()));
      pause = Math.min(pause * 2, 250);
    }
  }

  /** Sleeps up to `ms`, waking early when this node finishes the instance. */
  private nextChange(id: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const offs: Array<() => void> = [];
      const done = () => {
        clearTimeout(timer);
        for (const off of offs) off();
        resolve();
      };
      const timer = setTimeout(done, ms);
      for (const event of ["instance:done", "instance:failed", "instance:cancelled"] as const) {
        offs.push(this.events.on(event, (e) => e.id === id && done()));
      }
    });
  }

  /**
   * Terminal `cancelled` (no retry), with its live descendants. A step running
   * now is aborted and its outcome discarded.
   */
  async cancel(id: string, reason?: string, options: { client?: pg.ClientBase } = {}): Promise<void> {
    this.assertUsable();
    const bad = (m: string) => new ValidationError(`cancel: ${m}`);
    checkId(id, "id", bad);
    if (reason !== undefined && typeof reason !== "string")
      throw bad(`reason must be a string, got ${describe(reason)}`);
    // Stored as a step's error message is: bounded (8 KiB), NUL and lone surrogates replaced.
    const error = { name: "Cancelled", message: reason === undefined ? "cancelled" : storableMessage(reason) };
    const errorJson = JSON.stringify(error);
    const cleanups = onCancelSteps(this.config.machines);
    // The instance first, then its descendants level by level, each level in a statement of its own whose
    // snapshot is taken after the locks of the level above were granted: it sees every child that a spawn
    // holding one of those rows committed (see cancel and cancelDescendants in sql/instances.ts).
    // Keys: each level passes those the first statement took (`held`), or null to take its own as it
    // comes: right when each statement is a transaction of its own (nothing is held between them).
    const cancelTree = async (client: pg.ClientBase, extraKeys: string[], holdsKeys: boolean): Promise<CancelTry> => {
      const { rows } = await client.query<CancelTarget>(this.q.cancel, [
        id,
        errorJson,
        extraKeys,
        cleanups,
        this.config.channel,
      ]);
      const cancelled: string[] = [];
      const target = rows[0];
      if (!target || TERMINAL.has(target.status)) return { target, cancelled, missing: [] };
      const held = holdsKeys ? target.keys : null;
      for (let level = [id]; level.length > 0;) {
        cancelled.push(...level);
        const { rows: round } = await client.query<{ missing: string[]; cancelled: string[] }>(
          this.q.cancelDescendants,
          [level, errorJson, held, cleanups, this.config.channel],
        );
        if (round[0]!.missing.length > 0) return { target, cancelled, missing: round[0]!.missing };
        level = round[0]!.cancelled;
      }
      return { target, cancelled, missing: [] };
    };
    // A child spawned while the cancel ran can bring a key it does not hold: the try is undone and
    // made again, taking that key first. After a few, the keys are taken as they come instead.
    const MAX_TRIES = 5;
    let result: CancelTry | undefined;
    if (options.client) {
      const client = options.client;
      const why =
        "cancel locks the instance and then looks for its children, and a stricter snapshot misses children spawned or retried in between";
      await assertReadCommitted(client, "cancel", why);
      // Inside the caller's transaction a savepoint undoes a try; outside one, nothing is held between statements.
      const inTransaction = await client.query("savepoint gen_durable_cancel").then(
        () => true,
        (e: unknown) => {
          if ((e as { code?: string }).code === "25P01") return false;
          throw e;
        },
      );
      if (!inTransaction) result = await cancelTree(client, [], false);
      const extra: string[] = [];
      for (let tries = 1; !result; tries++) {
        const attempt = await cancelTree(client, extra, tries < MAX_TRIES).catch(async (e: unknown) => {
          await client.query("rollback to savepoint gen_durable_cancel").catch(() => {});
          throw e;
        });
        if (attempt.missing.length > 0) {
          await client.query("rollback to savepoint gen_durable_cancel");
          extra.push(...attempt.missing);
          continue;
        }
        await client.query("release savepoint gen_durable_cancel");
        result = attempt;
      }
    } else {
      const extra: string[] = [];
      for (let tries = 1; !result; tries++) {
        const attempt = await withTransaction(this.pool, async (client) => {
          const made = await cancelTree(client, extra, tries < MAX_TRIES);
          // Throwing rolls the try back.
          if (made.missing.length > 0) throw new MissingKeys(made.missing);
          return made;
        }).catch((e: unknown) => {
          if (e instanceof MissingKeys) return e;
          throw e;
        });
        if (attempt instanceof MissingKeys) extra.push(...attempt.keys);
        else result = attempt;
      }
    }
    const { target, cancelled } = result;
    if (!target) throw new UnknownInstanceError(id);
    if (target.status === "cancelled") return;
    if (TERMINAL.has(target.status)) throw new InstanceTerminatedError(id, target.status);
    // Already running its onCancel step: that step ends it cancelled.
    if (target.cleaning) return;
    for (const instance of cancelled) {
      this.leases.held.get(instance)?.controller.abort(new InvalidStateError(`instance ${instance} was cancelled`));
    }
    this.loops?.joins.trigger();
    // Routed to its onCancel step, it ends cancelled when that step has run.
    if (!target.routed) this.events.emit("instance:cancelled", { id, machine: target.machine, reason: error.message });
  }

  /** Registers this node (machines, queues, lease) for explain and `status`; repeated by the lease loop. */
  /** This node, as its heartbeat row records it. */
  private node(): { id: string; machines: string[]; queues: string[]; leaseMs: number } {
    const { nodeId, machines, queues, leaseMs } = this.config;
    return { id: nodeId, machines: [...machines.keys()], queues: [...queues.keys()], leaseMs };
  }

  /** Stops every node from claiming in `queue` (steps already running finish). Takes effect at each node's next claim. */
  async pauseQueue(queue: string): Promise<void> {
    this.assertUsable();
    await this.setPaused(queue, true);
  }

  /** Lets every node claim in `queue` again, and wakes them. */
  async resumeQueue(queue: string): Promise<void> {
    this.assertUsable();
    await this.setPaused(queue, false);
  }

  private async setPaused(queue: string, paused: boolean): Promise<void> {
    checkName(queue, `${paused ? "pauseQueue" : "resumeQueue"}: queue`, (m) => new ValidationError(m));
    await this.pool.query(this.flow.setPaused, [queue, paused]);
    if (!paused) {
      this.notifier.request(queue);
      await this.notifier.drain();
    }
  }

  /** The paused queues (all, or whether `queue` is). */
  async pausedQueues(): Promise<string[]> {
    this.assertUsable();
    return (await this.pool.query<{ name: string }>(this.flow.pausedQueues, [null])).rows.map((r) => r.name);
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
  async retry(id: string): Promise<void> {
    this.assertUsable();
    checkId(id, "retry: id", (m) => new ValidationError(m));
    await withTransaction(this.pool, async (client) => {
      // Root first, as cancel locks a tree: a retry and a cancel of the same tree take turns.
      const { rows } = await client.query<LineageRow>(this.q.lockLineage, [id]);
      const target = rows.find((r) => r.id === id);
      if (!target) throw new UnknownInstanceError(id);
      if (target.status !== "failed")
        throw new InvalidStateError(`retry: instance ${id} is ${target.status}; only failed instances can be retried`);
      const cancelled = rows.find((r) => r.id !== id && r.status === "cancelled");
      if (cancelled)
        throw new InvalidStateError(
          `retry: instance ${id} cannot run again: its ancestor ${cancelled.id} was cancelled`,
        );
      // A parent that was pruned waits for nothing: the child is retried like any instance.
      const parent = rows.find((r) => r.id === target.parent_id);
      let join: "none" | "count" | "reopen" = "none";
      if (parent) {
        if (parent.children_from === null || BigInt(id) < BigInt(parent.children_from)) {
          throw new InvalidStateError(
            `retry: instance ${id} is a child of an earlier spawn of instance ${parent.id}, whose join has run: a new outcome would reach no join`,
          );
        }
        // The join step reads ctx.children when it starts: until then the join can wait for this child again.
        const joinNotStarted = parent.status === "joining" || (parent.status === "runnable" && parent.joined);
        if (!joinNotStarted) {
          throw new InvalidStateError(
            `retry: instance ${id} is a child of instance ${parent.id}, which has already joined on its children (it is ${parent.status} now): a new outcome would reach no join; retry the parent instead if its join step failed`,
          );
        }
        join = parent.status === "runnable" ? "reopen" : target.join_counted ? "count" : "none";
      }
      await client.query(this.q.retry, [id, this.config.channel, parent?.id ?? null, join]);
    });
  }

  /**
   * Refuses a caller's pool whose connections default to a level stricter than
   * READ COMMITTED: the engine's single statements run at the session's default.
   * (A pool the engine opens is set to READ COMMITTED.) Checked once; a check
   * that failed (the database away, or the pool refused) runs again next time.
   */
  private checkPool(): Promise<void> {
    if (this.ownsPool) return Promise.resolve();
    this.poolChecked ??= isolationOf(this.pool).then((level) => {
      if (isReadCommitted(level)) return;
      throw new ConfigError(
        `GenDurable: the pool's connections default to ${level.toUpperCase()} (default_transaction_isolation), and gen-durable needs READ COMMITTED: ` +
          "it locks a row in one statement and reads what the row guards in the next, which a stricter snapshot misses. " +
          'Pass a pool whose connections default to read committed (the pg.Pool option options: "-c default_transaction_isolation=read\\ committed"), or a connectionString',
      );
    });
    return this.poolChecked.catch((error: unknown) => {
      this.poolChecked = undefined;
      throw error;
    });
  }

  /**
   * @internal For gen-durable/testing (drain, advanceTime) only: what this node
   * runs, how many claims it holds, and `wake()` to tick every loop and
   * scheduler now (due work found by the database clock runs without waiting).
   */
  _testing() {
    const wake = () => {
      for (const loop of Object.values(this.loops ?? {})) loop.trigger();
      for (const scheduler of this.schedulers.values()) scheduler.wake();
    };
    const { pool, config } = this;
    const running = this.state === "started" && this.loops !== undefined;
    const loops = Object.keys(this.loops ?? {});
    return {
      pool,
      schema: config.schema,
      nodeId: config.nodeId,
      queues: [...this.schedulers.keys()],
      machines: [...config.machines.keys()],
      loops,
      running,
      inFlight: () => this.leases.held.size,
      wake,
      clock: this.clock,
    };
  }

  private wakeQueue(queue: string): void {
    this.schedulers.get(queue)?.wake();
    this.notifier.request(queue);
  }

  private reportError(loop: string, error: unknown): void {
    this.events.emit("engine:error", { loop, error });
    this.config.logger.error({ err: error, loop }, `gen-durable ${loop} error`);
  }

  private assertUsable(): void {
    if (this.state === "stopped") throw new EngineStoppedError();
  }
}

/** The instance engine.cancel locked, as it was before. */
interface CancelTarget {
  status: string;
  machine: string;
  keys: string[];
  /** Already cleaning up after an earlier cancel. */
  cleaning: boolean;
  /** Routed now to its onCancel step. */
  routed: boolean;
}

/** One try of engine.cancel: `missing` keys (not held, met in a level) make the caller undo it and try again. */
interface CancelTry {
  target: CancelTarget | undefined;
  cancelled: string[];
  missing: string[];
}

class MissingKeys extends Error {
  constructor(readonly keys: string[]) {
    super("cancel: concurrency keys to take first");
  }
}

interface LineageRow {
  id: string;
  parent_id: string | null;
  status: string;
  joined: boolean;
  join_counted: boolean;
  children_from: string | null;
}

/** Refuses a caller's `client` in a transaction stricter than READ COMMITTED, saying why `what` needs it. */
async function assertReadCommitted(client: pg.ClientBase, what: string, why: string): Promise<void> {
  const level = await isolationOf(client);
  if (isReadCommitted(level)) return;
  throw new ValidationError(
    `${what}: the client's transaction is ${level.toUpperCase()}; gen-durable needs READ COMMITTED here: ${why}. Use a READ COMMITTED transaction (Postgres' default), or no client`,
  );
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
function toInstance(r: any): Instance {
  return {
    id: String(r.id),
    machine: r.machine,
    status: r.status,
    step: r.step,
    state: r.state,
    attempt: r.attempt,
    result: r.result,
    error: r.error,
    queue: r.queue,
    priority: r.priority,
    runAt: r.run_at,
    correlationKey: r.correlation_key,
    concurrencyKey: r.concurrency_key,
    parentId: r.parent_id === null ? null : String(r.parent_id),
    insertedAt: r.inserted_at,
    updatedAt: r.updated_at,
  };
}
