/**
 * Runs one claimed step: build ctx, run the user's code (invoke.ts: timeout
 * and abort), have the judge (judge.ts) turn what it returned or threw into a
 * Completion, and commit it fenced by the claim. Never throws: every path ends
 * in a commit attempt or in a lease left to expire.
 */
import type pg from "pg";
import type { AnyMachine, ChildOutcome, ReceivedSignal, StepContext, StepRateLimit } from "../define.js";
import { isConnectionError, isTransient, withTransaction } from "../db/pool.js";
import { LeaseLostError, ValidationError } from "../errors.js";
import type { StepFacts, TypedEmitter } from "../events.js";
import type { ErrorRecord } from "../json.js";
import type { Logger } from "../logger.js";
import type { ChildQueries } from "../sql/children.js";
import type { StepTraceFacts } from "../telemetry/otel.js";
import type { ClaimQueries } from "../sql/claims.js";
import type { InstanceQueries } from "../sql/instances.js";
import type { SignalQueries } from "../sql/signals.js";
import { attemptOf, isRunnable, type Attempt, type ClaimedRow, type RunnableAttempt } from "./attempt.js";
import type { NormalizedSpec } from "./await-spec.js";
import type { Completer } from "./completer.js";
import type { Completion } from "./completion.js";
import { createContext } from "./context.js";
import type { Wakeups } from "./wakeups.js";
import { isTerminal } from "../status.js";
import { lockNamesOf, type InsertRow } from "./insert.js";
import type { SqlApiQueries } from "../sql/sql-api.js";
import { acceptSqlState } from "./sql-api.js";
import { invokeStep } from "./invoke.js";
import { judgeReturn, judgeThrow, judgeWait } from "./judge.js";
import type { Leases } from "./leases.js";
import type { RateLimiter } from "./rate-limits.js";
import { tryResume } from "./signals.js";
import { storePublished } from "./published.js";
import type { JoinRule } from "./join-rule.js";
import type { PublishedQueries } from "../sql/published.js";
import { checkAwaited } from "../machine-typing.js";
import { recordUpcast, upcastState } from "./versions.js";
import type { VersionQueries } from "../sql/versions.js";
import { SYSTEM_CLOCK, type EngineClock } from "./clock.js";
import { routeFacts } from "./routes.js";
import { StepAbort } from "./step-abort.js";

export type { ClaimedRow } from "./attempt.js";

/**
 * Given to a row launched before a slot was free: resolves true once the row has one and its code
 * may run, false when it is refused one (it is then given back unstarted).
 */
export type SlotGate = () => Promise<boolean>;

export interface ExecutorDeps {
  pool: pg.Pool;
  machines: ReadonlyMap<string, AnyMachine>;
  claims: ClaimQueries;
  signals: SignalQueries;
  completer: Completer;
  leases: Leases;
  events: TypedEmitter;
  logger: Logger;
  maxPayloadBytes: number;
  /** Tells this node's scheduler and loops that work may be due. */
  wake: Wakeups;
  instances: InstanceQueries;
  children: ChildQueries;
  /** NOTIFY channel, for writes made inside a step's own transaction. */
  channel: string;
  /** Runs the step's code inside a context of its own (telemetry: the step's span is active in it). */
  around?: <T>(attempt: StepTraceFacts, run: () => T) => T;
  rateLimiter: RateLimiter;
  published: PublishedQueries;
  /** Cancels the live children of a parent whose join condition resumed it early (join-rule.ts). */
  cancelRemaining?: (parentId: string) => Promise<void>;
  versions: VersionQueries;
  /** The error a graceful stop aborts steps with (undefined until stop()). */
  stopReason: () => Error | undefined;
  /** Checks rows inserted from SQL (sql-api.ts). */
  sqlApi: SqlApiQueries;
  /** How long idempotency keys of spawned children are remembered. */
  idempotencyWindowMs: number;
  /**
   * The engine's clock (ctx.now(), and runAt reckoned in database time): its offset from this node's
   * clock is measured at start and kept current by every heartbeat (loops/clock-skew.ts); this
   * process's clock when absent.
   */
  clock?: EngineClock;
}

/** Tries of an await's or spawn's commit when the connection breaks under it. */
const COMMIT_TRIES = 3;

export class Executor {
  /**
   * Per instance, the execution still finishing on this node. The next step of
   * an instance can be claimed as soon as the previous outcome commits, and
   * the claim's reply can reach us before the commit's: the new step waits
   * for the old one to finish reporting, so every instance's events
   * (step:stop of one step, then step:start of the next) keep their order.
   */
  private readonly finishing = new Map<string, Promise<void>>();
  /** Per execution (instance id and claim token), the step code still running here (settles, never rejects). */
  private readonly running = new Map<string, Promise<void>>();

  constructor(private readonly deps: ExecutorDeps) {}

  private get clock(): EngineClock {
    return this.deps.clock ?? SYSTEM_CLOCK;
  }

  /**
   * Runs the step and commits its outcome. `onSettled` is called once the
   * step's code is done and only the commit remains, so the scheduler can
   * start other work meanwhile.
   */
  async execute(row: ClaimedRow, onSettled: () => void = () => {}, slot?: SlotGate): Promise<void> {
    const previous = this.finishing.get(row.id);
    const run = () => this.executeNow(row, onSettled, slot);
    const current = previous ? previous.then(run) : run();
    this.finishing.set(row.id, current);
    try {
      await current;
    } finally {
      if (this.finishing.get(row.id) === current) this.finishing.delete(row.id);
    }
  }

  /** Whether the row's step takes rate-limit tokens before its code runs (the scheduler starts such rows early). */
  drawsTokens(row: ClaimedRow): boolean {
    return this.deps.machines.get(row.machine)?.steps.get(row.step)?.rateLimit !== undefined;
  }

  private async executeNow(row: ClaimedRow, onSettled: () => void, slot: SlotGate | undefined): Promise<void> {
    const settle = () => {
      // Its outcome's commit counts the attempt now: no start mark needed (see Leases.markStarted).
      this.deps.leases.settled(row.id, row.claim_token);
      onSettled();
    };
    // The lease its claim holds already (the scheduler's, from the claim on): a cancel or a lost
    // lease that came while the row waited for a slot has aborted this attempt before its code runs.
    const held = this.deps.leases.held.get(row.id);
    let abort: StepAbort;
    if (held?.token === row.claim_token) abort = held.attempt;
    else {
      abort = new StepAbort();
      this.deps.leases.add(row.id, { token: row.claim_token, queue: row.queue, attempt: abort });
    }
    const started = performance.now();
    try {
      const ahead = row.claimed_ahead;
      if (ahead) {
        // Its code runs now, without a round trip first. Its attempt is counted by its outcome's
        // commit, or by a start mark if it is still running a moment from now, whichever lands
        // first (Leases.markStarted). The row is this execution's own (the scheduler that claimed
        // it keeps none of its fields but the key): updated in place, not copied.
        row.attempt += 1;
        row.claimed_ahead = false;
        if (!slot) this.deps.leases.markStarted(row.id, row.claim_token);
      }
      // Started before a slot was free: its code waits for one, and only then counts as started.
      const { id, claim_token } = row;
      const begin = slot
        ? async () => {
            if (!(await slot())) return false;
            if (ahead) this.deps.leases.markStarted(id, claim_token);
            return true;
          }
        : undefined;
      const machine = this.deps.machines.get(row.machine)!;
      await this.run(attemptOf(row, machine, started, this.deps.clock), abort, settle, begin);
    } catch (error) {
      // Only the database can land here (it is gone, or refused even a failed attempt's
      // record): the lease will expire and the reaper hands the step to another attempt.
      this.deps.events.emit("engine:error", { loop: "executor", error, step: facts(row) });
      this.deps.logger.error(
        { err: error, id: row.id, step: row.step },
        "could not record a step's start or outcome; it will re-run after its lease expires",
      );
    } finally {
      settle();
      this.deps.leases.delete(row.id, row.claim_token);
    }
  }

  /** Takes the step's tokens: 0 when it may run now, else how many ms until its turn in the bucket's line. */
  private draw(attempt: Attempt, spec: StepRateLimit, abort: StepAbort): Promise<number> {
    const { row, machine } = attempt;
    const where = `machine "${machine.name}" step "${row.step}"`;
    // The ctx is built only for a partition or weight that reads it.
    const ctx = async () => this.context(attempt, abort, undefined);
    return this.deps.rateLimiter.drawForStep(spec, ctx, row.rate_limited !== null, where);
  }

  private async run(
    claimed: Attempt,
    abort: StepAbort,
    settled: () => void,
    begin?: () => Promise<boolean>,
  ): Promise<void> {
    const accepted = claimed.row.unvalidated ? await this.acceptSqlState(claimed, settled) : claimed;
    if (accepted === null) return;
    // (Most rows were written by this definition: no upcast, and no await for one.)
    const attempt = accepted.row.version === accepted.machine.version ? accepted : await this.upcast(accepted, settled);
    if (!attempt) return;
    const { row, machine, maxAttempts } = attempt;
    if (!isRunnable(attempt)) {
      const steps = [...machine.steps.keys()].join(", ");
      const error = new ValidationError(`machine "${machine.name}" has no step "${row.step}" (its steps: ${steps})`);
      return this.fail(attempt, error, settled);
    }
    const { step } = attempt;
    if (row.attempt > maxAttempts) {
      // Earlier attempts died with their worker (the reaper recorded why); do not run it again.
      const last = row.error?.message ?? "lost its worker";
      const error = new Error(`step "${row.step}" exhausted its ${maxAttempts} attempts; the last one: ${last}`);
      return this.fail(attempt, error, settled);
    }

    if (step.rateLimit) {
      let waitMs: number;
      try {
        waitMs = await this.draw(attempt, step.rateLimit, abort);
      } catch (error) {
        if (isConnectionError(error)) throw error;
        return this.fail(attempt, error, settled);
      }
      if (waitMs > 0) return this.postpone(attempt, step.rateLimit.name, waitMs, settled);
    }
    if (begin) {
      // Refused a slot (the node stops, or its steps turned slow): given back unstarted, its tokens spent.
      if (!(await begin())) return this.giveBack(row);
      // Its duration counts from the slot, not from the wait for one.
      attempt.started = performance.now();
    }

    if (row.joined && this.deps.cancelRemaining) {
      // A join condition resumed it early: the children it no longer needs end before its code runs.
      try {
        await this.deps.cancelRemaining(row.id);
      } catch (error) {
        if (isConnectionError(error)) throw error;
        return this.fail(attempt, error, settled);
      }
    }
    this.deps.events.emit("step:start", facts(row));
    const { maxPayloadBytes } = this.deps;
    if (step.transactional) {
      // The step and its outcome share one transaction: ctx.client writes commit with the new state, or not at all.
      return this.inTransaction(attempt, async (client) =>
        judgeReturn(attempt, await this.invoke(attempt, abort, client), maxPayloadBytes),
      );
    }
    let completion: Completion;
    try {
      const judged = judgeReturn(attempt, await this.invoke(attempt, abort, undefined), maxPayloadBytes);
      // (A done is judged at once: no await, and no turn of the event loop, for it.)
      completion = judged instanceof Promise ? await judged : judged;
    } catch (error) {
      // Not the step's failure: its code never ran. It runs again now, its attempt refunded.
      if (error instanceof ConnectionBrokeBeforeStart) return this.releaseNow(row);
      return this.fail(attempt, error, settled);
    }
    // Awaits, spawns and publications write more than their own row: they commit in a transaction of their own.
    if (completion.status === "awaiting" || completion.spawn || completion.publish) {
      return this.inTransaction(attempt, async () => completion);
    }
    settled();
    let won: boolean;
    try {
      won = await this.deps.completer.submit(completion);
    } catch (error) {
      // The database refused this outcome (not the connection): a failed attempt with its error, now,
      // rather than a row left running until its lease expires and an error that says "lost its worker".
      if (isConnectionError(error) || isTransient(error)) throw error;
      return this.fail(attempt, refused(error));
    }
    return this.committed(attempt, completion, won, null);
  }

  /**
   * Produces a completion inside a transaction and commits it there. If the
   * step throws, or the commit is refused on its data (say, a child's
   * correlation key is taken), everything rolls back and the attempt fails.
   */
  private async inTransaction(
    attempt: RunnableAttempt,
    produce: (client: pg.ClientBase) => Promise<Completion>,
  ): Promise<void> {
    const { row, step } = attempt;
    let committed: { completion: Completion; resumedQueue: string | null };
    // What the last try produced, and whether a connection broke under a try: its COMMIT may have
    // landed with the reply lost, which only the row can tell (see landedEarlier).
    let produced: Completion | undefined;
    let broke = false;
    for (let tries = 1; ; tries++) {
      try {
        committed = await withTransaction(this.deps.pool, async (client) => {
          // The step may outlive its attempt (timeout, lost lease, shutdown): once the attempt is
          // settled, its ctx.client refuses every query, so nothing it does later can commit.
          const guarded = guardClient(client, row.id);
          const completion = await produce(guarded.client).finally(guarded.close);
          produced = completion;
          const { won, resumedQueue } = await this.commitOn(client, completion);
          // Throwing rolls back everything, the step's own ctx.client writes included.
          if (!won) throw new LeaseLostError(row.id);
          return { completion, resumedQueue };
        });
        break;
      } catch (error) {
        if (error instanceof LeaseLostError || (isConnectionError(error) && step.transactional)) {
          const landed = broke || isConnectionError(error) ? await this.landedEarlier(row, produced) : undefined;
          if (landed) {
            committed = landed;
            break;
          }
        }
        broke ||= isConnectionError(error);
        if (error instanceof LeaseLostError) return this.lost(row);
        // Loading the context broke on the connection: the code never ran, as in run().
        if (error instanceof ConnectionBrokeBeforeStart) return this.releaseNow(row);
        // A deadlock or serialization failure rolled it all back; a transactional step fails that
        // attempt (its code must run again), an await or spawn is committed again below.
        if (isTransient(error) && !step.transactional && tries < COMMIT_TRIES) continue;
        if (!isConnectionError(error)) return this.fail(attempt, error);
        if (step.transactional) {
          // Its code ran and its ctx.client writes rolled back with the connection: a failed attempt,
          // recorded now on a fresh connection rather than after its lease, and counted, so a step
          // that breaks its connection every time still runs out of attempts.
          return this.fail(attempt, brokeUnder(error));
        }
        // An await or spawn computed without the connection: commit it again on a fresh one.
        // Fenced by the claim token, so a commit that did land before the break cannot land twice.
        if (tries >= COMMIT_TRIES) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50 * tries));
      }
    }
    return this.committed(attempt, committed.completion, true, committed.resumedQueue);
  }

  /**
   * A row inserted from SQL: its state meets the machine's schema here, once, and the schema's
   * output is stored. A state it refuses fails the instance at once (another attempt would refuse
   * it again); null when the attempt was settled here (failed, or its claim lost).
   */
  private async acceptSqlState(attempt: Attempt, settled: () => void): Promise<Attempt | null> {
    const { row, machine } = attempt;
    let accepted: { state: unknown } | null;
    try {
      accepted = await acceptSqlState(this.deps.pool, this.deps.sqlApi, row, machine, this.deps.maxPayloadBytes);
    } catch (error) {
      if (isConnectionError(error)) throw error;
      await this.fail({ ...attempt, maxAttempts: row.attempt }, error, settled);
      return null;
    }
    if (accepted === null) {
      this.lost(row);
      return null;
    }
    // Checked by the current definition: its version, so no upcaster runs on it.
    return { ...attempt, row: { ...row, state: accepted.state, unvalidated: false, version: machine.version } };
  }

  /**
   * After a connection broke under this claim's commit: whether that commit landed anyway (its
   * reply was lost), by the claim token the row records with every outcome. If it did, the
   * outcome is committed, once: the caller goes on as after any commit. The await's resume, if
   * the mailbox satisfied it in that commit, is unknown here: its queue is woken in case.
   */
  private async landedEarlier(
    row: ClaimedRow,
    completion: Completion | undefined,
  ): Promise<{ completion: Completion; resumedQueue: string | null } | undefined> {
    if (completion === undefined) return undefined;
    try {
      const { rows } = await this.deps.claims.committedBy(this.deps.pool, {
        claims: [{ id: row.id, token: row.claim_token }],
      });
      if (rows.length === 0) return undefined;
    } catch {
      // Unknown: handled as before (a fenced retry, or a failed attempt that cannot land twice).
      return undefined;
    }
    return { completion, resumedQueue: completion.status === "awaiting" ? row.queue : null };
  }

  /** An instance written by an older version of its machine: its state is upcast and recorded before the step runs. */
  private async upcast(attempt: Attempt, settled: () => void): Promise<Attempt | undefined> {
    const { row, machine } = attempt;
    if (row.version === machine.version) return attempt;
    let state: unknown;
    try {
      ({ value: state } = await upcastState(machine, row.version, row.state));
      if (
        !(await recordUpcast(
          this.deps.pool,
          this.deps.versions,
          row,
          state,
          machine.version,
          this.deps.maxPayloadBytes,
        ))
      ) {
        this.lost(row);
        return undefined;
      }
    } catch (error) {
      if (isConnectionError(error)) throw error;
      await this.fail(attempt, error, settled);
      return undefined;
    }
    return { ...attempt, row: { ...row, state, version: machine.version } };
  }

  /** Gives a row claimed ahead back unstarted, in its place, for any node to take. */
  private async giveBack(row: ClaimedRow): Promise<void> {
    const queues = await this.deps.leases.giveBack([{ id: row.id, token: row.claim_token }]);
    for (const queue of queues) this.deps.wake.broadcast(queue);
  }

  /** Gives a claimed row back at once (runnable now, attempt refunded) and wakes its queue here. */
  private async releaseNow(row: ClaimedRow): Promise<void> {
    const queues = await this.deps.leases.release(row.id, row.claim_token);
    this.deps.events.emit("step:released", { ...facts(row), durationMs: 0 });
    this.deps.logger.warn(
      facts(row),
      "the connection broke before the step's code ran; its instance was released to run again",
    );
    for (const queue of queues) this.deps.wake.queue(queue);
  }

  /**
   * Commits one completion on a client inside a transaction. An await also
   * consumes a mailbox that already satisfies it; a spawn inserts its children.
   */
  private async commitOn(
    client: pg.ClientBase,
    completion: Completion,
  ): Promise<{ won: boolean; resumedQueue: string | null }> {
    const { spawn, publish, join_rule, ...row } = completion;
    const awaiting = completion.status === "awaiting";
    // Every key this commit changes (its own, its children's), before any row lock: one global order.
    const keys = [completion.concurrency_key, ...(spawn ?? []).flatMap(lockNamesOf)].filter((k) => k !== null);
    if (keys.length > 0) await this.deps.claims.lockKeys(client, { keys });
    if (awaiting) {
      // Lock first, read the mailbox after: a signal committed before the lock is seen, one after it sees us parked.
      const locked = await this.deps.claims.lockClaimed(client, { id: completion.id, token: completion.token });
      if (locked.rowCount === 0) return { won: false, resumedQueue: null };
    }
    // The transaction goes on after it (children, the mailbox): keys are left to the row trigger.
    const { rows } = await this.deps.claims.complete(client, { outcomes: [row] });
    if (rows.length === 0) return { won: false, resumedQueue: null };
    if (spawn && spawn.length > 0) await this.insertChildren(client, completion.id, spawn, join_rule ?? null);
    if (publish)
      await storePublished(client, this.deps.published, completion, this.deps.channel, this.deps.maxPayloadBytes);
    const resumedQueue = awaiting
      ? await tryResume(client, this.deps.signals, completion.id, completion.await_spec as NormalizedSpec, null)
      : null;
    return { won: true, resumedQueue };
  }

  /** Inserts all children in one statement, in the parent's transaction; NOTIFY goes out on commit. */
  private async insertChildren(
    client: pg.ClientBase,
    parentId: string,
    children: InsertRow[],
    joinRule: JoinRule | null,
  ): Promise<void> {
    const rows = children.map((child) => ({ ...child, parent_id: parentId }));
    const { rows: out } = await this.deps.instances.insert(client, {
      rows,
      channel: this.deps.channel,
      windowMs: this.deps.idempotencyWindowMs,
    });
    const results = out.filter((r) => r.idx >= 0);
    const taken = results.find((r) => !r.inserted);
    if (taken || results.length !== children.length) {
      // A join waits only for children its spawn created: a child that names an existing instance refuses the spawn.
      const child = taken ? children[taken.idx]! : undefined;
      const message = taken?.rejected
        ? `the correlation key ${JSON.stringify(child!.correlation_key)} of a child already names instance ` +
          `${taken.id} and the child's ifExists is "reject"`
        : child?.idempotency_key
          ? `the idempotency key ${JSON.stringify(child.idempotency_key)} of a child already names instance ` +
            `${taken!.id}`
          : `the correlation key ${JSON.stringify(child?.correlation_key ?? "?")} of a child already names ` +
            `a live instance`;
      throw new ValidationError(`ctx.spawn: ${message}; no child was inserted`);
    }
    const first = results.reduce((min, r) => (BigInt(r.id) < BigInt(min) ? r.id : min), results[0]!.id);
    await this.deps.children.markSpawn(client, { parentId, first, joinRule });
  }

  /**
   * Its rate limit's bucket is short: the step goes back to runnable, due at its
   * turn in the bucket's line. Not an attempt and not a transition (no history row).
   */
  private async postpone(attempt: Attempt, limit: string, waitMs: number, settled: () => void): Promise<void> {
    const { row } = attempt;
    const delay = Math.ceil(waitMs);
    const completion = judgeWait(attempt, limit, delay);
    settled();
    const won = await this.deps.completer.submit(completion);
    if (!won) return this.lost(row);
    this.deps.events.emit("step:rate_limited", { ...facts(row), limit, waitMs: delay });
    this.deps.wake.queue(row.queue, delay);
  }

  /**
   * The step's ctx. A row with awaited signals (checked against the machine's schemas) or a join
   * (its children loaded) needs the database or a schema first; any other gets its ctx at once,
   * without a promise.
   */
  private context(
    attempt: Attempt,
    abort: StepAbort,
    client: pg.ClientBase | undefined,
  ): StepContext<unknown, unknown, string> | Promise<StepContext<unknown, unknown, string>> {
    const { row } = attempt;
    if (row.awaited === null && !row.joined) return this.contextOf(attempt, abort, client, [], []);
    return this.loadedContext(attempt, abort, client);
  }

  private async loadedContext(attempt: Attempt, abort: StepAbort, client: pg.ClientBase | undefined) {
    const { row, machine } = attempt;
    // A payload its machine's schema refuses fails the attempt: a step never sees it.
    const awaited =
      row.awaited === null
        ? []
        : await checkAwaited(machine, toReceived(row.awaited), `step "${row.step}" of machine "${machine.name}"`);
    const children = row.joined ? await this.loadChildren(row.id, client) : [];
    return this.contextOf(attempt, abort, client, awaited, children);
  }

  private contextOf(
    attempt: Attempt,
    abort: StepAbort,
    client: pg.ClientBase | undefined,
    awaited: readonly ReceivedSignal[],
    children: readonly ChildOutcome[],
  ) {
    const { row } = attempt;
    const route = routeFacts(attempt);
    // Every fact by name (no spread): see Context in runtime/context.ts.
    return createContext({
      publishTo: attempt,
      maxAttempts: route.maxAttempts,
      resumedBy: route.resumedBy,
      failure: route.failure,
      cancellation: route.cancellation,
      now: route.now,
      id: row.id,
      machine: row.machine,
      step: row.step,
      state: row.state,
      attempt: row.attempt,
      awaited,
      children,
      correlationKey: row.correlation_key,
      insertedAt: new Date(row.inserted_ms),
      abort,
      logger: this.deps.logger,
      client,
    });
  }

  /** Runs the step's code in its ctx (see invokeStep). Not async: it hands on invokeStep's promise. */
  private invoke(attempt: RunnableAttempt, abort: StepAbort, client: pg.ClientBase | undefined): Promise<unknown> {
    const made = this.context(attempt, abort, client);
    if (!(made instanceof Promise)) return this.invokeIn(attempt, abort, made);
    return made.then(
      (ctx) => this.invokeIn(attempt, abort, ctx),
      (error: unknown) => {
        throw isConnectionError(error) ? new ConnectionBrokeBeforeStart(error) : error;
      },
    );
  }

  private invokeIn(attempt: RunnableAttempt, abort: StepAbort, ctx: StepContext<unknown, unknown, string>) {
    const { row, machine, step } = attempt;
    const run = () => step.run(ctx);
    const { around } = this.deps;
    return invokeStep(machine.name, step, abort, around ? () => around(row, run) : run, (settled) => {
      // Until it settles, a cancelled step keeps its concurrency key (see lost()).
      const execution = `${row.id}:${row.claim_token}`;
      this.running.set(execution, settled);
      void settled.then(() => this.running.delete(execution));
    });
  }

  /**
   * A join's ctx.children. A transactional step loads them on its own transaction's connection:
   * asking the pool for a second one while holding the first would wedge the node once as many
   * transactional joins run as the pool has connections (each waits for one another holds).
   */
  private async loadChildren(parentId: string, client: pg.ClientBase | undefined): Promise<ChildOutcome[]> {
    const { rows } = await this.deps.children.children(client ?? this.deps.pool, { parentId });
    return rows;
  }

  /**
   * A failed attempt: judged (judge.ts: retried after backoff, or terminal `failed` when attempts are
   * exhausted; state unchanged), reported, and committed fenced by the claim.
   */
  private async fail(attempt: Attempt, thrown: unknown, settled: () => void = () => {}): Promise<void> {
    const { row } = attempt;
    const stopReason = this.deps.stopReason();
    // Compared only once stop() has set it: before that it is undefined, which a step may throw too.
    if (stopReason !== undefined && thrown === stopReason) {
      // Aborted by a graceful stop, which released the row (attempt refunded) before
      // aborting it: nothing to record here, and not a failure.
      settled();
      const durationMs = Math.round(performance.now() - attempt.started);
      this.deps.events.emit("step:released", { ...facts(row), durationMs });
      this.deps.logger.info(
        facts(row),
        "step abandoned by a graceful stop; its instance was released to run elsewhere",
      );
      return;
    }
    const { error, willRetry, completion } = judgeThrow(attempt, thrown);
    this.deps.events.emit("step:exception", { ...facts(row), error, durationMs: completion.duration_ms, willRetry });
    settled();
    const won = await this.deps.completer.submit(completion);
    this.committed(attempt, completion, won, null);
  }

  private lost(row: ClaimedRow): void {
    this.deps.events.emit("lease:lost", facts(row));
    this.deps.logger.warn(facts(row), "lease lost before the step's outcome committed; outcome discarded");
    if (row.concurrency_key !== null) void this.handBackKey(row, row.concurrency_key);
  }

  /**
   * A keyed step whose outcome was discarded may have been cancelled while it ran: the cancel left
   * its key held, so the key's next instance does not run beside code that ignored the abort. Once
   * that code has settled, hand the key back (a no-op unless the instance still holds it and is no
   * longer running); if it never settles, the reaper frees the key when the lease expires.
   */
  private async handBackKey(row: ClaimedRow, key: string): Promise<void> {
    await this.running.get(`${row.id}:${row.claim_token}`);
    try {
      const { rows } = await this.deps.claims.releaseHold(this.deps.pool, {
        key,
        id: row.id,
        channel: this.deps.channel,
      });
      for (const { queue } of rows) this.deps.wake.queue(queue);
    } catch (error) {
      // The reaper frees it after the lease instead.
      this.deps.events.emit("engine:error", { loop: "executor", error, step: facts(row) });
    }
  }

  private committed(
    { row, machine }: Attempt,
    completion: Completion,
    won: boolean,
    resumedQueue: string | null,
  ): void {
    if (!won) return this.lost(row);
    const { events } = this.deps;
    // Literals, not `{ ...facts(row), outcome }`: adding to a spread leaves V8's fast path, once per step.
    const { id, step, attempt, queue } = row;
    events.emit("step:stop", {
      id,
      machine: row.machine,
      step,
      attempt,
      queue,
      outcome: completion.outcome,
      durationMs: completion.duration_ms,
    });
    const instance = { id: row.id, machine: machine.name };
    if (completion.status === "done") {
      events.emit("instance:done", { id, machine: machine.name, result: completion.result });
    }
    if (completion.status === "failed") {
      events.emit("instance:failed", { ...instance, error: completion.error as ErrorRecord });
    }
    if (completion.status === "cancelled") {
      events.emit("instance:cancelled", { ...instance, reason: (completion.error as ErrorRecord).message });
    }
    if (completion.status === "runnable") {
      // A runAt is a time by the database's clock: reckoned from this node's clock corrected by the
      // offset the heartbeat measured, or a node minutes off wakes minutes early or late.
      const delay = completion.run_at ? this.clock.msUntil(Date.parse(completion.run_at)) : completion.delay_ms;
      this.deps.wake.queue(row.queue, delay ?? 0);
    }
    if (row.parent_id !== null && isTerminal(completion.status)) this.deps.wake.joins();
    if (resumedQueue) this.deps.wake.queue(resumedQueue);
    else if (completion.status === "awaiting" && completion.delay_ms !== null) {
      this.deps.wake.timeouts(completion.delay_ms);
    } else if (completion.status === "awaiting" && completion.run_at !== null && completion.run_at !== "infinity") {
      // A deadline given as a date (until): its run_at is in database time.
      this.deps.wake.timeouts(this.clock.msUntil(Date.parse(completion.run_at)));
    }
  }
}

/** What identifies the attempt in every event about it. */
function facts(row: ClaimedRow): StepFacts {
  return { id: row.id, machine: row.machine, step: row.step, attempt: row.attempt, queue: row.queue };
}

/** Loading a step's context (its children, say) failed on the connection: the code did not run. */
class ConnectionBrokeBeforeStart extends Error {
  constructor(cause: unknown) {
    super("the connection broke before the step's code ran", { cause });
  }
}

/** A connection that broke under a transactional step, as the error of its attempt. */
function brokeUnder(error: unknown): Error {
  const message = error instanceof Error ? error.message : String(error);
  return new Error(
    `the connection broke under the step's transaction (its ctx.client writes were rolled back): ${message}`,
    { cause: error },
  );
}

/** A database error on an outcome, as the error of the attempt it fails. */
function refused(error: unknown): Error {
  const message = error instanceof Error ? error.message : String(error);
  return new Error(`the database refused the step's outcome: ${message}`, { cause: error });
}

function toReceived(awaited: NonNullable<ClaimedRow["awaited"]>): ReceivedSignal[] {
  return awaited.map((s) => ({
    id: s.id,
    event: s.event,
    payload: s.payload,
    insertedAt: new Date(s.insertedAt),
  }));
}

/** A view of `client` for user code whose `query` rejects with LeaseLostError once `close()` was called. */
function guardClient(client: pg.PoolClient, id: string): { client: pg.ClientBase; close: () => void } {
  let closed = false;
  const guarded = new Proxy(client, {
    get(target, prop) {
      if (prop === "query") {
        return (...args: unknown[]) => {
          if (!closed) return (target.query as (...a: unknown[]) => unknown).apply(target, args);
          const error = new LeaseLostError(id);
          const callback = args[args.length - 1];
          if (typeof callback === "function") return void (callback as (e: Error) => void)(error);
          return Promise.reject(error);
        };
      }
      if (prop === "release") return () => {};
      const value = Reflect.get(target, prop, target);
      return typeof value === "function" ? value.bind(target) : value;
    },
  });
  return { client: guarded, close: () => void (closed = true) };
}
