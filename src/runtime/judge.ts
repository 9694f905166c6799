/**
 * The judge of outcomes: what an attempt's returned value or thrown error
 * means, as the row update (a Completion) the group commit writes. Pure: no
 * database and no events. The executor commits what it says; runStep
 * (gen-durable/testing) reports it, so a test sees exactly what the engine
 * would record for the same return or throw.
 */
import { DEFAULT_BACKOFF, resolveBackoff, retryDelay } from "../backoff.js";
import { checkRunAt, describe, toMs } from "../duration.js";
import { ValidationError } from "../errors.js";
import { checkJson, safeThrown, storableMessage, toErrorRecord, type ErrorRecord } from "../json.js";
import { outcomeData, type OutcomeData } from "../outcome.js";
import { validate } from "../schema.js";
import type { AnyMachine } from "../define.js";
import type { Attempt } from "./attempt.js";
import { normalizeSpec } from "./await-spec.js";
import type { Completion } from "./completion.js";
import { prepareItems, type InsertRow } from "./insert.js";
import { publishedOf } from "./published.js";
import { joinRule } from "./join-rule.js";
import { checkResult, checkTransition } from "../machine-typing.js";
import { endCancelled, isNonRetryable, routeFailure } from "./routes.js";

const defaultBackoff = resolveBackoff(DEFAULT_BACKOFF, "default backoff");
/** The most children one ctx.spawn may insert. */
const MAX_CHILDREN = 100_000;

/** A failed attempt: what it records, when it runs again, and the row update that says so. */
export interface Failure {
  /** The stored error: bounded, storable, and never empty. */
  error: ErrorRecord;
  /** Another attempt follows (this one was not the last); otherwise the instance is terminal `failed`. */
  willRetry: boolean;
  /** Milliseconds until the retry (0 when it will not retry). */
  delayMs: number;
  /** Runnable again after the backoff, or `failed`. The state is unchanged. */
  completion: Completion;
}

/**
 * What a step returned, as an outcome; throws a ValidationError when it is
 * none. A job may return any value: it is the job's result.
 */
export function readOutcome({ machine, row }: Attempt, returned: unknown): OutcomeData {
  const data = outcomeData(returned);
  if (data) return data;
  if (machine.kind === "job") return { kind: "done", result: returned };
  throw new ValidationError(
    `${whereOf({ machine, row })} returned ${describe(returned)}; a step must return ctx.next(...), ` +
      `ctx.await(...), ctx.spawn(...), ctx.done(...), ctx.snooze(...) or ctx.cancel(...)`,
  );
}

/**
 * What the step's returned value means as a row update. Throws (a
 * ValidationError, or its schema's own error) when it is not a valid outcome,
 * names no step of the machine, or carries a state, a result or children the
 * engine would refuse: the attempt then fails with that error (judgeThrow).
 */
export function judgeReturn(
  attempt: Attempt,
  returned: unknown,
  maxPayloadBytes: number,
): Completion | Promise<Completion> {
  let judged: Completion | Promise<Completion>;
  try {
    judged = judgeOutcome(attempt, returned, maxPayloadBytes);
  } catch (thrown) {
    // Judging reads what the step returned (children, Proxies): whatever that throws is made safe to inspect.
    throw safeThrown(thrown);
  }
  // A done without a result schema is judged at once: no promise for a job's every outcome.
  return judged instanceof Promise
    ? judged.then(
        (completion) => withCancelAndPublished(attempt, completion, maxPayloadBytes),
        (thrown: unknown) => {
          throw safeThrown(thrown);
        },
      )
    : withCancelAndPublished(attempt, judged, maxPayloadBytes);
}

function withCancelAndPublished(attempt: Attempt, judged: Completion, maxPayloadBytes: number): Completion {
  try {
    // A cancel's cleanup step: whatever it returned (a valid outcome), the instance ends cancelled.
    const completion = attempt.row.cancel_requested ? endCancelled(attempt, baseCompletion(attempt), null) : judged;
    const publish = attempt.published?.size
      ? publishedOf(attempt.published, whereOf(attempt), maxPayloadBytes)
      : undefined;
    return publish ? { ...completion, publish } : completion;
  } catch (thrown) {
    throw safeThrown(thrown);
  }
}

/** The outcome's row update; a promise only where a schema check may be one. */
function judgeOutcome(attempt: Attempt, returned: unknown, maxPayloadBytes: number): Completion | Promise<Completion> {
  const data = readOutcome(attempt, returned);
  if (data.kind === "done" && !attempt.machine.result) return judgeDone(attempt, data.result, maxPayloadBytes);
  return judgeOutcomeChecked(attempt, data, maxPayloadBytes);
}

/** A done: its result (the schema's output, when the machine has one) checked and copied as JSON. */
function judgeDone(attempt: Attempt, result: unknown, maxPayloadBytes: number): Completion {
  // The checked copy is what is stored: a second read of the original may differ.
  const { value } = checkJson(result ?? null, `the result of ${whereOf(attempt)}`, maxPayloadBytes);
  // base is this call's own: set in place rather than copied (a job's every outcome comes here).
  const base = baseCompletion(attempt);
  base.status = "done";
  base.result = value;
  base.outcome = "done";
  return base;
}

async function judgeOutcomeChecked(attempt: Attempt, data: OutcomeData, maxPayloadBytes: number): Promise<Completion> {
  const { row } = attempt;
  const where = whereOf(attempt);
  const machine = attempt.machine;
  const base = baseCompletion(attempt);
  switch (data.kind) {
    case "next": {
      const target = checkTarget(attempt, machine, data.step, where, "ctx.next");
      const schedule = checkSchedule(data.options, where, attempt);
      return {
        ...base,
        ...(await newState(machine, data, where, maxPayloadBytes)),
        ...schedule,
        status: "runnable",
        step: target,
        attempt_op: "reset",
        to_step: target,
        outcome: "next",
      };
    }
    case "await": {
      const target = checkTarget(attempt, machine, data.step, where, "ctx.await");
      const spec = normalizeSpec(data.spec, `${where}: ctx.await`);
      const { timeout, onTimeout } = data.options;
      const until = awaitUntil(attempt, data.options.until, timeout, where);
      if ((timeout === undefined && until === undefined) !== (onTimeout === undefined)) {
        throw new ValidationError(
          `${where}: ctx.await needs both timeout and onTimeout, or neither (until counts as a timeout)`,
        );
      }
      if (onTimeout !== undefined)
        spec.onTimeout = checkTarget(attempt, machine, onTimeout, where, "ctx.await's onTimeout");
      return {
        ...base,
        ...(await newState(machine, data, where, maxPayloadBytes)),
        status: "awaiting",
        step: target,
        attempt_op: "reset",
        await_spec: spec,
        // The deadline lives in run_at; an await without timeout never comes due.
        ...(until !== undefined
          ? { run_at: until }
          : timeout === undefined
            ? { run_at: "infinity" }
            : { delay_ms: toMs(timeout, `${where}: ctx.await timeout`, (m) => new ValidationError(m)) }),
        to_step: target,
        outcome: "await",
      };
    }
    case "spawn": {
      const target = checkTarget(attempt, machine, data.step, where, "ctx.spawn");
      const spawn = (await prepareChildren(data.children, `${where}: ctx.spawn`, maxPayloadBytes)).map((row) => ({
        ...row,
        trace_context: data.traceContext ?? null,
      }));
      const join_rule = joinRule(data.options, spawn.length, `${where}: ctx.spawn`);
      return {
        join_rule,
        ...base,
        ...(await newState(machine, data, where, maxPayloadBytes)),
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
      // With a result schema (judgeOutcome judges a done without one at once).
      return judgeDone(attempt, (await checkResult(machine, data.result, where)).value, maxPayloadBytes);
    case "snooze": {
      const delay = toMs(data.delay, `${where}: ctx.snooze(delay)`, (m) => new ValidationError(m));
      return {
        ...base,
        status: "runnable",
        delay_ms: delay,
        attempt_op: "refund",
        to_step: row.step,
        outcome: "snooze",
      };
    }
    case "cancel": {
      // Bounded and made storable like any error message (no NUL, no lone surrogates).
      const reason = data.reason === undefined ? undefined : storableMessage(String(data.reason));
      const error = { name: "Cancelled", message: reason ?? `cancelled by ${where}` };
      return { ...base, status: "cancelled", error, hist_error: error, outcome: "cancelled" };
    }
  }
}

/**
 * What a failed attempt records, and when it runs again: retried after its
 * backoff while attempts remain, terminal `failed` after the last.
 */
export function judgeThrow(attempt: Attempt, thrown: unknown): Failure {
  const { row, step, machine, maxAttempts } = attempt;
  // `throw undefined` and `Promise.reject()` carry nothing: say so, naming the step.
  const error = toErrorRecord(
    thrown === undefined || thrown === null
      ? new Error(`step "${row.step}" threw ${String(thrown)} instead of an Error`)
      : thrown,
  );
  const base = baseCompletion(attempt);
  if (row.attempt >= maxAttempts || isNonRetryable(attempt, thrown)) {
    const completion: Completion = row.cancel_requested
      ? endCancelled(attempt, base, error)
      : (routeFailure(attempt, error, base) ?? {
          ...base,
          status: "failed",
          error,
          hist_error: error,
          outcome: "failed",
        });
    return { error, willRetry: false, delayMs: 0, completion };
  }
  const { delayMs, problem } = retryDelay(step?.backoff ?? machine.backoff ?? defaultBackoff, row.attempt);
  if (problem) error.message = `${error.message} (${problem})`;
  const completion: Completion = {
    ...base,
    status: "runnable",
    delay_ms: delayMs,
    error,
    hist_error: error,
    to_step: row.step,
    outcome: "error",
  };
  return { error, willRetry: true, delayMs, completion };
}

/**
 * Its rate limit's bucket is short: the step goes back to runnable, due at its
 * turn in the bucket's line (`waitMs`, rounded up). Not an attempt and not a
 * transition (no history row).
 */
export function judgeWait(attempt: Attempt, limit: string, waitMs: number): Completion {
  return {
    ...baseCompletion(attempt),
    status: "runnable",
    delay_ms: Math.ceil(waitMs),
    attempt_op: "refund",
    to_step: attempt.row.step,
    outcome: "rate_limited",
    rate_limited: limit,
    // Keep the last attempt's error visible while it waits.
    error: attempt.row.error,
  };
}

function whereOf({ machine, row }: Pick<Attempt, "machine" | "row">): string {
  return `step "${row.step}" of machine "${machine.name}"`;
}

/** The row update that changes nothing but the claim: every outcome starts from it. */
function baseCompletion({ row, started }: Attempt): Completion {
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

/** A step that declares `to` may only go there (checkTransition), and only to steps of the machine. */
function checkTarget(attempt: Attempt, machine: AnyMachine, step: unknown, where: string, helper: string): string {
  const target = checkMachineStep(machine, step, where, helper);
  checkTransition(attempt.step, target, where, helper);
  return target;
}

function checkMachineStep(machine: AnyMachine, step: unknown, where: string, helper: string): string {
  if (typeof step !== "string" || !machine.steps.has(step)) {
    throw new ValidationError(
      `${where}: ${helper} named ${describe(step)}, which is not a step of the machine ` +
        `(its steps: ${[...machine.steps.keys()].join(", ")})`,
    );
  }
  return step;
}

async function newState(
  machine: AnyMachine,
  data: Extract<OutcomeData, { state: unknown }>,
  where: string,
  maxPayloadBytes: number,
): Promise<{ set_state: boolean; state: unknown }> {
  if (!data.hasState) return { set_state: false, state: null };
  const { value: state } = await validate(machine.schema, data.state, `the new state from ${where}`);
  // The checked copy is what is stored: a second read of the original may differ.
  return { set_state: true, state: checkJson(state, `the new state from ${where}`, maxPayloadBytes).value };
}

function checkSchedule(
  options: { delay?: unknown; runAt?: unknown; priority?: unknown },
  where: string,
  { clock }: Attempt,
): { delay_ms: number | null; run_at: string | null; priority: number | null } {
  const bad = (m: string) => new ValidationError(`${where}: ${m}`);
  if (options.delay !== undefined && options.runAt !== undefined) throw bad("pass delay or runAt, not both");
  const out = { delay_ms: null as number | null, run_at: null as string | null, priority: null as number | null };
  if (options.delay !== undefined) out.delay_ms = toMs(options.delay, "delay", bad);
  // A date on the engine's clock (ctx.now()), stored in database time.
  if (options.runAt !== undefined) {
    out.run_at = checkRunAt(options.runAt, "runAt", bad);
    if (clock) out.run_at = clock.toDatabase(options.runAt as Date).toISOString();
  }
  if (options.priority !== undefined) {
    if (!Number.isInteger(options.priority) || Math.abs(options.priority as number) > 2 ** 31 - 1) {
      throw bad(`priority must be an integer, got ${describe(options.priority)}`);
    }
    out.priority = options.priority as number;
  }
  return out;
}

/** Validates every child before anything is written; at most MAX_CHILDREN per spawn, correlation keys distinct. */
async function prepareChildren(children: unknown[], where: string, maxPayloadBytes: number): Promise<InsertRow[]> {
  if (children.length > MAX_CHILDREN) {
    throw new ValidationError(`${where}: at most ${MAX_CHILDREN} children per spawn, got ${children.length}`);
  }
  const rows = await prepareItems(
    children,
    (i) => `${where} child ${i}:`,
    (i, child) =>
      new ValidationError(`${where}: child ${i} must be { machine, state | args, ... }, got ${describe(child)}`),
    maxPayloadBytes,
  );
  const idempotencyKeys = new Set<string>();
  for (const row of rows) {
    if (row.idempotency_key === null) continue;
    if (idempotencyKeys.has(row.idempotency_key)) {
      const key = JSON.stringify(row.idempotency_key);
      throw new ValidationError(`${where}: two children share the idempotency key ${key}`);
    }
    idempotencyKeys.add(row.idempotency_key);
  }
  const keys = new Set<string>();
  for (const row of rows) {
    if (row.correlation_key === null) continue;
    if (keys.has(row.correlation_key)) {
      const key = JSON.stringify(row.correlation_key);
      throw new ValidationError(`${where}: two children share the correlation key ${key}`);
    }
    keys.add(row.correlation_key);
  }
  return rows;
}

/**
 * An await's `until`: a Date or an ISO 8601 string on the engine's clock, as the database time its
 * run_at stores (undefined without one). Not with `timeout`. A deadline already past is due at once.
 */
function awaitUntil(attempt: Attempt, until: unknown, timeout: unknown, where: string): string | undefined {
  if (until === undefined) return undefined;
  const bad = (m: string) => new ValidationError(`${where}: ctx.await ${m}`);
  if (timeout !== undefined) throw bad("takes timeout or until, not both");
  const date = typeof until === "string" && until.trim() !== "" ? new Date(until) : until;
  const checked = checkRunAt(date, "until", (m) =>
    bad(typeof until === "string" ? `${m} (until was the string ${describe(until)})` : m),
  );
  return attempt.clock ? attempt.clock.toDatabase(date as Date).toISOString() : checked;
}
