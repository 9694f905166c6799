/**
 * Runs one claimed step: build ctx, run the user's code (with timeout and
 * abort), turn what it returned or threw into a Completion, and commit it
 * fenced by the claim. Never throws: every path ends in a commit attempt or in
 * a lease left to expire.
 */
import { prepared } from "../db/prepared.js";
import type pg from "pg";
import type { AnyMachine, ChildOutcome, ReceivedSignal, ResolvedStep } from "../define.js";
import { isConnectionError, isTransient, withTransaction } from "../db/pool.js";
import type { ChildQueries } from "../sql/children.js";
import type { InstanceQueries } from "../sql/instances.js";
import { prepareInsert, type InsertRow } from "./insert.js";
import { checkRunAt, describe, toMs } from "../duration.js";
import { LeaseLostError, StepTimeoutError, ValidationError } from "../errors.js";
import type { TypedEmitter } from "../events.js";
import { encodeJson, storableMessage, type ErrorRecord } from "../json.js";
import { stepLogger, type Logger } from "../logger.js";
import { outcomeData, type OutcomeData } from "../outcome.js";
import { validate } from "../schema.js";
import type { ClaimQueries } from "../sql/claims.js";
import type { SignalQueries } from "../sql/signals.js";
import { normalizeSpec, type NormalizedSpec } from "./await-spec.js";
import type { Completer } from "./completer.js";
import type { Completion } from "./completion.js";
import { createContext } from "./context.js";
import { attemptFailure } from "./failure.js";
import type { Leases } from "./leases.js";
import { tryResume } from "./signals.js";
import type { RateLimiter } from "./rate-limits.js";
import { setLongTimeout, type LongTimeout } from "../timers.js";

/** A row as the claim query returns it. */
export interface ClaimedRow {
  id: string;
  machine: string;
  step: string;
  state: unknown;
  attempt: number;
  max_attempts: number | null;
  claim_token: string;
  correlation_key: string | null;
  awaited: Array<{ id: string; event: string; payload: unknown; insertedAt: string }> | null;
  /** This step is a join: ctx.children is loaded for it. */
  joined: boolean;
  parent_id: string | null;
  inserted_at: Date;
  queue: string;
  error: ErrorRecord | null;
  concurrency_key: string | null;
  /** The rate limit this step waited in line for (it was postponed); null when it did not wait. */
  rate_limited: string | null;
  /** Claimed into the node's buffer: its attempt is counted when the step starts (Leases.start). */
  claimed_ahead: boolean;
}

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
  /** Wake this node's scheduler for `queue`, now or after `delayMs`. */
  wake: (queue: string, delayMs: number) => void;
  /** A child finished: run the join sweep soon. */
  wakeJoins: () => void;
  instances: InstanceQueries;
  children: ChildQueries;
  /** NOTIFY channel, for writes made inside a step's own transaction. */
  channel: string;
  /** Sweep await timeouts after `delayMs` (this node just parked one with that deadline). */
  wakeTimeouts: (delayMs: number) => void;
  /** Runs the step's code inside a context of its own (telemetry: the step's span is active in it). */
  around?: <T>(attempt: { id: string; attempt: number }, run: () => T) => T;
  rateLimiter: RateLimiter;
  /** The error a graceful stop aborts steps with (undefined until stop()). */
  stopReason: () => Error | undefined;
}

export const DEFAULT_MAX_ATTEMPTS = 20;
/** Tries of an await's or spawn's commit when the connection breaks under it. */
const COMMIT_TRIES = 3;
const TERMINAL: ReadonlySet<string> = new Set(["done", "failed", "cancelled"]);

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

  /**
   * Runs the step and commits its outcome. `onSettled` is called once the
   * step's code is done and only the commit remains, so the scheduler can
   * start other work meanwhile.
   */
  async execute(row: ClaimedRow, onSettled: () => void = () => {}): Promise<void> {
    const previous = this.finishing.get(row.id);
    const current = (previous ? previous.then(() => this.executeNow(row, onSettled)) : this.executeNow(row, onSettled));
    this.finishing.set(row.id, current);
    try {
      await current;
    } finally {
      if (this.finishing.get(row.id) === current) this.finishing.delete(row.id);
    }
  }

  private async executeNow(claimed: ClaimedRow, onSettled: () => void): Promise<void> {
    let row = claimed;
    const controller = new AbortController();
    this.deps.leases.add(row.id, { token: row.claim_token, queue: row.queue, controller });
    const started = performance.now();
    try {
      if (row.claimed_ahead) {
        // Its attempt is counted in the database before its code runs: a crash from
        // here on charges it, a crash before it does not (the row never started).
        const attempt = await this.deps.leases.start(row.id, row.claim_token);
        if (attempt === null) return this.lost(row);
        row = { ...row, attempt, claimed_ahead: false };
      }
      await this.run(row, controller, started, onSettled);
    } catch (error) {
      // Only the database can land here (it is gone, or refused even a failed attempt's
      // record): the lease will expire and the reaper hands the step to another attempt.
      const step = { id: row.id, machine: row.machine, step: row.step, attempt: row.attempt, queue: row.queue };
      this.deps.events.emit("engine:error", { loop: "executor", error, step });
      this.deps.logger.error({ err: error, id: row.id, step: row.step }, "could not record a step's start or outcome; it will re-run after its lease expires");
    } finally {
      onSettled();
      this.deps.leases.delete(row.id, row.claim_token);
    }
  }

  private async run(row: ClaimedRow, controller: AbortController, started: number, settled: () => void): Promise<void> {
    const machine = this.deps.machines.get(row.machine)!;
    const step = machine.steps.get(row.step);
    const facts = { id: row.id, machine: row.machine, step: row.step, attempt: row.attempt, queue: row.queue };
    const maxAttempts = row.max_attempts ?? step?.maxAttempts ?? machine.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;

    if (!step) {
      const error = new ValidationError(`machine "${machine.name}" has no step "${row.step}" (its steps: ${[...machine.steps.keys()].join(", ")})`);
      return this.fail(row, machine, undefined, maxAttempts, error, started, settled);
    }
    if (row.attempt > maxAttempts) {
      // Earlier attempts died with their worker (the reaper recorded why); do not run it again.
      const error = new Error(`step "${row.step}" exhausted its ${maxAttempts} attempts; the last one: ${row.error?.message ?? "lost its worker"}`);
      return this.fail(row, machine, step, maxAttempts, error, started, settled);
    }

    if (step.rateLimit) {
      let waitMs: number;
      try {
        const ctx = await this.context(row, machine, controller, undefined);
        const where = `machine "${machine.name}" step "${row.step}"`;
        waitMs = await this.deps.rateLimiter.drawForStep(step.rateLimit, ctx, row.rate_limited !== null, where);
      } catch (error) {
        if (isConnectionError(error)) throw error;
        return this.fail(row, machine, step, maxAttempts, error, started, settled);
      }
      if (waitMs > 0) return this.postpone(row, step.rateLimit.name, waitMs, started, settled);
    }

    this.deps.events.emit("step:start", facts);
    if (step.transactional) {
      // The step and its outcome share one transaction: ctx.client writes commit with the new state, or not at all.
      return this.inTransaction(row, machine, step, maxAttempts, started, async (client) =>
        this.toCompletion(row, machine, step, await this.invoke(row, machine, step, controller, client), started),
      );
    }
    let completion: Completion;
    try {
      const returned = await this.invoke(row, machine, step, controller, undefined);
      completion = await this.toCompletion(row, machine, step, returned, started);
    } catch (error) {
      // Not the step's failure: its code never ran. It runs again now, its attempt refunded.
      if (error instanceof ConnectionBrokeBeforeStart) return this.releaseNow(row);
      return this.fail(row, machine, step, maxAttempts, error, started, settled);
    }
    // Awaits and spawns write more than their own row: they commit in a transaction of their own.
    if (completion.status === "awaiting" || completion.spawn) {
      return this.inTransaction(row, machine, step, maxAttempts, started, async () => completion);
    }
    settled();
    let won: boolean;
    try {
      won = await this.deps.completer.submit(completion);
    } catch (error) {
      // The database refused this outcome (not the connection): a failed attempt with its error, now,
      // rather than a row left running until its lease expires and an error that says "lost its worker".
      if (isConnectionError(error) || isTransient(error)) throw error;
      return this.fail(row, machine, step, maxAttempts, refused(error), started);
    }
    return this.committed(row, machine, completion, won, null);
  }

  /**
   * Produces a completion inside a transaction and commits it there. If the
   * step throws, or the commit is refused on its data (say, a child's
   * correlation key is taken), everything rolls back and the attempt fails.
   */
  private async inTransaction(
    row: ClaimedRow,
    machine: AnyMachine,
    step: ResolvedStep,
    maxAttempts: number,
    started: number,
    produce: (client: pg.ClientBase) => Promise<Completion>,
  ): Promise<void> {
    let committed: { completion: Completion; resumedQueue: string | null };
    for (let tries = 1; ; tries++) {
      try {
        committed = await withTransaction(this.deps.pool, async (client) => {
          // The step may outlive its attempt (timeout, lost lease, shutdown): once the attempt is
          // settled, its ctx.client refuses every query, so nothing it does later can commit.
          const step = guardClient(client, row.id);
          const completion = await produce(step.client).finally(step.close);
          const { won, resumedQueue } = await this.commitOn(client, completion);
          // Throwing rolls back everything, the step's own ctx.client writes included.
          if (!won) throw new LeaseLostError(row.id);
          return { completion, resumedQueue };
        });
        break;
      } catch (error) {
        if (error instanceof LeaseLostError) return this.lost(row);
        // A deadlock or serialization failure rolled it all back; a transactional step fails that
        // attempt (its code must run again), an await or spawn is committed again below.
        if (isTransient(error) && !step.transactional && tries < COMMIT_TRIES) continue;
        if (!isConnectionError(error)) return this.fail(row, machine, step, maxAttempts, error, started);
        if (step.transactional) {
          // Its code ran and its ctx.client writes rolled back with the connection: a failed attempt,
          // recorded now on a fresh connection rather than after its lease, and counted, so a step
          // that breaks its connection every time still runs out of attempts.
          return this.fail(row, machine, step, maxAttempts, brokeUnder(error), started);
        }
        // An await or spawn computed without the connection: commit it again on a fresh one.
        // Fenced by the claim token, so a commit that did land before the break cannot land twice.
        if (tries >= COMMIT_TRIES) throw error;
        await new Promise((resolve) => setTimeout(resolve, 50 * tries));
      }
    }
    return this.committed(row, machine, committed.completion, true, committed.resumedQueue);
  }

  /** Gives a claimed row back at once (runnable now, attempt refunded) and wakes its queue here. */
  private async releaseNow(row: ClaimedRow): Promise<void> {
    const queues = await this.deps.leases.release(row.id, row.claim_token);
    const facts = { id: row.id, machine: row.machine, step: row.step, attempt: row.attempt, queue: row.queue };
    this.deps.events.emit("step:released", { ...facts, durationMs: 0 });
    this.deps.logger.warn(facts, "the connection broke under a transactional step; its instance was released to run again");
    for (const queue of queues) this.deps.wake(queue, 0);
  }

  /**
   * Commits one completion on a client inside a transaction. An await also
   * consumes a mailbox that already satisfies it; a spawn inserts its children.
   */
  private async commitOn(client: pg.ClientBase, completion: Completion): Promise<{ won: boolean; resumedQueue: string | null }> {
    const { spawn, ...row } = completion;
    const awaiting = completion.status === "awaiting";
    // Every key this commit changes (its own, its children's), before any row lock: one global order.
    const keys = [completion.concurrency_key, ...(spawn ?? []).map((child) => child.concurrency_key)].filter((k) => k !== null);
    if (keys.length > 0) await client.query(prepared(this.deps.claims.lockKeys, [keys]));
    if (awaiting) {
      // Lock first, read the mailbox after: a signal committed before the lock is seen, one after it sees us parked.
      const locked = await client.query(this.deps.claims.lockClaimed, [completion.id, completion.token]);
      if (locked.rowCount === 0) return { won: false, resumedQueue: null };
    }
    const { rows } = await client.query(prepared(this.deps.claims.complete, [JSON.stringify([row])]));
    if (rows.length === 0) return { won: false, resumedQueue: null };
    if (spawn && spawn.length > 0) await this.insertChildren(client, completion.id, spawn);
    const resumedQueue = awaiting ? await tryResume(client, this.deps.signals, completion.id, completion.await_spec as NormalizedSpec, null) : null;
    return { won: true, resumedQueue };
  }

  /** Inserts all children in one statement, in the parent's transaction; NOTIFY goes out on commit. */
  private async insertChildren(client: pg.ClientBase, parentId: string, children: InsertRow[]): Promise<void> {
    const rows = children.map((child) => ({ ...child, parent_id: parentId }));
    const { rows: out } = await client.query<{ idx: number; id: string; inserted: boolean | null }>(
      prepared(this.deps.instances.insert, [JSON.stringify(rows), this.deps.channel]),
    );
    const results = out.filter((r) => r.idx >= 0);
    const taken = results.filter((r) => !r.inserted).map((r) => children[r.idx]!.correlation_key);
    if (taken.length > 0 || results.length !== children.length) {
      throw new ValidationError(`ctx.spawn: the correlation key ${JSON.stringify(taken[0] ?? "?")} of a child already names a live instance; no child was inserted`);
    }
    const first = results.reduce((min, r) => (BigInt(r.id) < BigInt(min) ? r.id : min), results[0]!.id);
    await client.query(this.deps.children.markSpawn, [parentId, first]);
  }

  /**
   * Its rate limit's bucket is short: the step goes back to runnable, due at its
   * turn in the bucket's line. Not an attempt and not a transition (no history row).
   */
  private async postpone(row: ClaimedRow, limit: string, waitMs: number, started: number, settled: () => void): Promise<void> {
    const delay = Math.ceil(waitMs);
    const completion: Completion = {
      ...this.base(row, started),
      status: "runnable",
      delay_ms: delay,
      attempt_op: "refund",
      to_step: row.step,
      outcome: "rate_limited",
      rate_limited: limit,
      // Keep the last attempt's error visible while it waits.
      error: row.error,
    };
    settled();
    const won = await this.deps.completer.submit(completion);
    if (!won) return this.lost(row);
    this.deps.events.emit("step:rate_limited", { id: row.id, machine: row.machine, step: row.step, attempt: row.attempt, queue: row.queue, limit, waitMs: delay });
    this.deps.wake(row.queue, delay);
  }

  private async context(row: ClaimedRow, machine: AnyMachine, controller: AbortController, client: pg.ClientBase | undefined) {
    return createContext({
      id: row.id,
      machine: row.machine,
      step: row.step,
      state: row.state,
      attempt: row.attempt,
      awaited: toReceived(row.awaited),
      children: row.joined ? await this.loadChildren(row.id) : [],
      correlationKey: row.correlation_key,
      insertedAt: row.inserted_at,
      abortSignal: controller.signal,
      log: stepLogger(this.deps.logger, { id: row.id, machine: machine.name, step: row.step, attempt: row.attempt }),
      client,
    });
  }

  private async invoke(
    row: ClaimedRow,
    machine: AnyMachine,
    step: ResolvedStep,
    controller: AbortController,
    client: pg.ClientBase | undefined,
  ): Promise<unknown> {
    const ctx = await this.context(row, machine, controller, client).catch((error: unknown) => {
      throw isConnectionError(error) ? new ConnectionBrokeBeforeStart(error) : error;
    });
    // A timeout may exceed Node's largest timer ("30d"): setLongTimeout waits in chunks.
    let timer: LongTimeout | undefined;
    if (step.timeoutMs !== undefined) {
      timer = setLongTimeout(() => controller.abort(new StepTimeoutError(machine.name, step.name, step.timeoutMs!)), step.timeoutMs);
    }
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(controller.signal.reason);
      if (controller.signal.aborted) onAbort();
      else controller.signal.addEventListener("abort", onAbort, { once: true });
    });
    aborted.catch(() => {});
    try {
      // The step cannot be killed, but it can be abandoned: on abort we stop waiting for it.
      const run = () => step.run(ctx);
      const { around } = this.deps;
      const code = Promise.resolve().then(() => (around ? around(row, run) : run()));
      // Until it settles, a cancelled step keeps its concurrency key (see lost()).
      const settled = code.then(() => undefined, () => undefined);
      const execution = `${row.id}:${row.claim_token}`;
      this.running.set(execution, settled);
      void settled.then(() => this.running.delete(execution));
      return await Promise.race([code, aborted]);
    } finally {
      timer?.clear();
      controller.signal.removeEventListener("abort", onAbort!);
    }
  }

  private async loadChildren(parentId: string): Promise<ChildOutcome[]> {
    const { rows } = await this.deps.pool.query<ChildOutcome>(this.deps.children.children, [parentId]);
    return rows;
  }

  private async toCompletion(row: ClaimedRow, machine: AnyMachine, step: ResolvedStep, returned: unknown, started: number): Promise<Completion> {
    const where = `step "${row.step}" of machine "${machine.name}"`;
    let data = outcomeData(returned);
    if (!data) {
      if (machine.kind !== "job") {
        throw new ValidationError(
          `${where} returned ${describe(returned)}; a step must return ctx.next(...), ctx.await(...), ctx.spawn(...), ctx.done(...), ctx.snooze(...) or ctx.cancel(...)`,
        );
      }
      data = { kind: "done", result: returned };
    }
    const base = this.base(row, started);
    switch (data.kind) {
      case "next": {
        const target = this.checkStep(machine, data.step, where, "ctx.next");
        const schedule = this.schedule(data.options, where);
        return {
          ...base,
          ...(await this.newState(machine, data, where)),
          ...schedule,
          status: "runnable",
          step: target,
          attempt_op: "reset",
          to_step: target,
          outcome: "next",
        };
      }
      case "await": {
        const target = this.checkStep(machine, data.step, where, "ctx.await");
        const spec = normalizeSpec(data.spec, `${where}: ctx.await`);
        const { timeout, onTimeout } = data.options;
        if ((timeout === undefined) !== (onTimeout === undefined)) {
          throw new ValidationError(`${where}: ctx.await needs both timeout and onTimeout, or neither`);
        }
        if (onTimeout !== undefined) spec.onTimeout = this.checkStep(machine, onTimeout, where, "ctx.await's onTimeout");
        return {
          ...base,
          ...(await this.newState(machine, data, where)),
          status: "awaiting",
          step: target,
          attempt_op: "reset",
          await_spec: spec,
          // The deadline lives in run_at; an await without timeout never comes due.
          ...(timeout === undefined ? { run_at: "infinity" } : { delay_ms: toMs(timeout, `${where}: ctx.await timeout`, (m) => new ValidationError(m)) }),
          to_step: target,
          outcome: "await",
        };
      }
      case "spawn": {
        const target = this.checkStep(machine, data.step, where, "ctx.spawn");
        const spawn = await this.prepareChildren(data.children, `${where}: ctx.spawn`);
        return {
          ...base,
          ...(await this.newState(machine, data, where)),
          // No children: nothing to wait for, the join step runs now.
          status: spawn.length > 0 ? "joining" : "runnable",
          step: target,
          attempt_op: "reset",
          children_pending: spawn.length,
          joined: spawn.length === 0,
          spawn,
          to_step: target,
          outcome: "spawn",
        };
      }
      case "done":
        encodeJson(data.result ?? null, `the result of ${where}`, this.deps.maxPayloadBytes);
        return { ...base, status: "done", result: data.result ?? null, outcome: "done" };
      case "snooze": {
        const delay = toMs(data.delay, `${where}: ctx.snooze(delay)`, (m) => new ValidationError(m));
        return { ...base, status: "runnable", delay_ms: delay, attempt_op: "refund", to_step: row.step, outcome: "snooze" };
      }
      case "cancel": {
        // Bounded and made storable like any error message (no NUL, no lone surrogates).
        const reason = data.reason === undefined ? undefined : storableMessage(String(data.reason));
        const error = { name: "Cancelled", message: reason ?? `cancelled by ${where}` };
        return { ...base, status: "cancelled", error, hist_error: error, outcome: "cancelled" };
      }
    }
  }

  /** Validates every child before anything is written; at most 100,000 per spawn. */
  private async prepareChildren(children: unknown[], where: string): Promise<InsertRow[]> {
    if (children.length > 100_000) throw new ValidationError(`${where}: at most 100000 children per spawn, got ${children.length}`);
    const rows = await Promise.all(
      children.map((child, i) => {
        if (typeof child !== "object" || child === null) throw new ValidationError(`${where}: child ${i} must be { machine, state | args, ... }, got ${describe(child)}`);
        const { machine, ...options } = child as { machine: AnyMachine };
        return prepareInsert(machine, options, i, `${where} child ${i}:`, this.deps.maxPayloadBytes);
      }),
    );
    const keys = new Set<string>();
    for (const row of rows) {
      if (row.correlation_key === null) continue;
      if (keys.has(row.correlation_key)) throw new ValidationError(`${where}: two children share the correlation key ${JSON.stringify(row.correlation_key)}`);
      keys.add(row.correlation_key);
    }
    return rows;
  }

  private base(row: ClaimedRow, started: number): Completion {
    return {
      id: row.id,
      token: row.claim_token,
      concurrency_key: row.concurrency_key,
      status: "runnable",
      step: null,
      set_state: false,
      state: null,
      run_at: null,
      delay_ms: null,
      priority: null,
      attempt_op: "keep",
      result: null,
      error: null,
      await_spec: null,
      children_pending: null,
      joined: null,
      from_step: row.step,
      to_step: null,
      outcome: "",
      attempt: row.attempt,
      duration_ms: Math.round(performance.now() - started),
      hist_error: null,
    };
  }

  private checkStep(machine: AnyMachine, step: unknown, where: string, helper: string): string {
    if (typeof step !== "string" || !machine.steps.has(step)) {
      throw new ValidationError(`${where}: ${helper} named ${describe(step)}, which is not a step of the machine (its steps: ${[...machine.steps.keys()].join(", ")})`);
    }
    return step;
  }

  private async newState(machine: AnyMachine, data: Extract<OutcomeData, { state: unknown }>, where: string) {
    if (!data.hasState) return { set_state: false, state: null };
    const state = await validate(machine.schema, data.state, `the new state from ${where}`);
    encodeJson(state, `the new state from ${where}`, this.deps.maxPayloadBytes);
    return { set_state: true, state };
  }

  private schedule(options: { delay?: unknown; runAt?: unknown; priority?: unknown }, where: string) {
    const bad = (m: string) => new ValidationError(`${where}: ${m}`);
    if (options.delay !== undefined && options.runAt !== undefined) throw bad("pass delay or runAt, not both");
    const out: { delay_ms: number | null; run_at: string | null; priority: number | null } = { delay_ms: null, run_at: null, priority: null };
    if (options.delay !== undefined) out.delay_ms = toMs(options.delay, "delay", bad);
    if (options.runAt !== undefined) out.run_at = checkRunAt(options.runAt, "runAt", bad);
    if (options.priority !== undefined) {
      if (!Number.isInteger(options.priority) || Math.abs(options.priority as number) > 2 ** 31 - 1) throw bad(`priority must be an integer, got ${describe(options.priority)}`);
      out.priority = options.priority as number;
    }
    return out;
  }

  /** A failed attempt: retried after backoff, or terminal `failed` when attempts are exhausted. State is unchanged. */
  private async fail(
    row: ClaimedRow,
    machine: AnyMachine,
    step: ResolvedStep | undefined,
    maxAttempts: number,
    thrown: unknown,
    started: number,
    settled: () => void = () => {},
  ): Promise<void> {
    const stopReason = this.deps.stopReason();
    // Compared only once stop() has set it: before that it is undefined, which a step may throw too.
    if (stopReason !== undefined && thrown === stopReason) {
      // Aborted by a graceful stop, which released the row (attempt refunded) before
      // aborting it: nothing to record here, and not a failure.
      settled();
      const facts = { id: row.id, machine: row.machine, step: row.step, attempt: row.attempt, queue: row.queue };
      this.deps.events.emit("step:released", { ...facts, durationMs: Math.round(performance.now() - started) });
      this.deps.logger.info(facts, "step abandoned by a graceful stop; its instance was released to run elsewhere");
      return;
    }
    const { error, willRetry, delayMs } = attemptFailure(thrown, row.step, row.attempt, maxAttempts, step?.backoff ?? machine.backoff);
    const durationMs = Math.round(performance.now() - started);
    const completion: Completion = willRetry
      ? { ...this.base(row, started), status: "runnable", delay_ms: delayMs, error, hist_error: error, to_step: row.step, outcome: "error" }
      : { ...this.base(row, started), status: "failed", error, hist_error: error, outcome: "failed" };
    this.deps.events.emit("step:exception", { id: row.id, machine: row.machine, step: row.step, attempt: row.attempt, queue: row.queue, error, durationMs, willRetry });
    settled();
    const won = await this.deps.completer.submit(completion);
    this.committed(row, machine, completion, won, null);
  }

  private lost(row: ClaimedRow): void {
    const facts = { id: row.id, machine: row.machine, step: row.step, attempt: row.attempt, queue: row.queue };
    this.deps.events.emit("lease:lost", facts);
    this.deps.logger.warn(facts, "lease lost before the step's outcome committed; outcome discarded");
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
      const { rows } = await this.deps.pool.query<{ queue: string }>(this.deps.claims.releaseHold, [key, row.id, this.deps.channel]);
      for (const { queue } of rows) this.deps.wake(queue, 0);
    } catch (error) {
      // The reaper frees it after the lease instead.
      this.deps.events.emit("engine:error", { loop: "executor", error, step: { id: row.id, machine: row.machine, step: row.step, attempt: row.attempt, queue: row.queue } });
    }
  }

  private committed(row: ClaimedRow, machine: AnyMachine, completion: Completion, won: boolean, resumedQueue: string | null): void {
    if (!won) return this.lost(row);
    const facts = { id: row.id, machine: row.machine, step: row.step, attempt: row.attempt, queue: row.queue };
    this.deps.events.emit("step:stop", { ...facts, outcome: completion.outcome, durationMs: completion.duration_ms });
    if (completion.status === "done") this.deps.events.emit("instance:done", { id: row.id, machine: machine.name, result: completion.result });
    if (completion.status === "failed") this.deps.events.emit("instance:failed", { id: row.id, machine: machine.name, error: completion.error as ErrorRecord });
    if (completion.status === "cancelled") {
      this.deps.events.emit("instance:cancelled", { id: row.id, machine: machine.name, reason: (completion.error as ErrorRecord).message });
    }
    if (completion.status === "runnable") {
      const delay = completion.run_at ? Date.parse(completion.run_at) - Date.now() : (completion.delay_ms ?? 0);
      this.deps.wake(row.queue, Math.max(0, delay));
    }
    if (row.parent_id !== null && TERMINAL.has(completion.status)) this.deps.wakeJoins();
    if (resumedQueue) this.deps.wake(resumedQueue, 0);
    else if (completion.status === "awaiting" && completion.delay_ms !== null) this.deps.wakeTimeouts(completion.delay_ms);
  }
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
  return new Error(`the connection broke under the step's transaction (its ctx.client writes were rolled back): ${message}`, { cause: error });
}

/** A database error on an outcome, as the error of the attempt it fails. */
function refused(error: unknown): Error {
  const message = error instanceof Error ? error.message : String(error);
  return new Error(`the database refused the step's outcome: ${message}`, { cause: error });
}

function toReceived(awaited: ClaimedRow["awaited"]): ReceivedSignal[] {
  return (awaited ?? []).map((s) => ({ id: s.id, event: s.event, payload: s.payload, insertedAt: new Date(s.insertedAt) }));
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
