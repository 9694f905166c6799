/** engine.get, list, history, explain and wait: reads, never a lock. */
import { describe, toMs, type Duration } from "../duration.js";
import { UnknownInstanceError, ValidationError, WaitTimeoutError } from "../errors.js";
import type { Instance, ListFilter, Transition } from "../instance.js";
import { checkId, checkKey, checkName } from "../names.js";
import { explainInstance, type Explanation } from "../runtime/explain.js";
import { toInstance, toTransition } from "../sql/instances.js";
import { STATUSES, TERMINAL } from "../status.js";
import { didYouMean, rejectUnknownKeys } from "../suggest.js";
import type { ClientContext } from "./context.js";

const LIST_KEYS = ["machine", "status", "queue", "correlationKey", "limit", "after"];

export async function getInstance(
  ctx: ClientContext,
  target: string | { correlationKey: string },
): Promise<Instance | null> {
  ctx.assertUsable();
  const bad = (m: string) => new ValidationError(`get: ${m}`);
  if (typeof target === "object" && target !== null && "correlationKey" in target) {
    const key = checkKey(target.correlationKey, "correlationKey", bad);
    const { rows } = await ctx.sql.instances.getByKey(ctx.pool, { correlationKey: key });
    return rows[0] ? toInstance(rows[0]) : null;
  }
  if (typeof target !== "string") throw bad(`expected an id or { correlationKey }, got ${describe(target)}`);
  const { rows } = await ctx.sql.instances.get(ctx.pool, { id: checkId(target, "id", bad) });
  return rows[0] ? toInstance(rows[0]) : null;
}

export async function listInstances(ctx: ClientContext, filter: ListFilter = {}): Promise<Instance[]> {
  ctx.assertUsable();
  const bad = (m: string) => new ValidationError(`list: ${m}`);
  if (typeof filter !== "object" || filter === null) throw bad(`the filter must be an object, got ${describe(filter)}`);
  rejectUnknownKeys(filter, LIST_KEYS, "list", (m) => new ValidationError(m));
  const limit = filter.limit ?? 100;
  if (!Number.isInteger(limit) || limit < 1 || limit > 10_000)
    throw bad(`limit must be an integer from 1 to 10000, got ${describe(filter.limit)}`);
  const statuses = filter.status === undefined ? null : Array.isArray(filter.status) ? filter.status : [filter.status];
  for (const status of statuses ?? []) {
    if (!STATUSES.includes(status)) {
      const suggestion = typeof status === "string" ? didYouMean(status, STATUSES) : "";
      throw bad(`status must be one of ${STATUSES.join(", ")}; got ${describe(status)}${suggestion}`);
    }
  }
  const { rows } = await ctx.sql.instances.list(ctx.pool, {
    machine: filter.machine === undefined ? null : checkName(filter.machine, "machine", bad),
    statuses,
    queue: filter.queue === undefined ? null : checkName(filter.queue, "queue", bad),
    correlationKey: filter.correlationKey === undefined ? null : checkKey(filter.correlationKey, "correlationKey", bad),
    after: filter.after === undefined ? null : checkId(filter.after, "after", bad),
    limit,
  });
  return rows.map(toInstance);
}

export async function history(ctx: ClientContext, id: string): Promise<Transition[]> {
  ctx.assertUsable();
  checkId(id, "history: id", (m) => new ValidationError(m));
  const { rows } = await ctx.sql.instances.history(ctx.pool, { id });
  return rows.map(toTransition);
}

export async function explain(ctx: ClientContext, id: string): Promise<Explanation> {
  ctx.assertUsable();
  checkId(id, "explain: id", (m) => new ValidationError(m));
  const instance = await getInstance(ctx, id);
  if (!instance) throw new UnknownInstanceError(id);
  return explainInstance(ctx.pool, ctx.config, instance, ctx.config.schema);
}

/**
 * Resolves with the instance once it is terminal. Reads it again after a pause that doubles
 * up to 250 ms, and at once when this node finishes it (other nodes' outcomes are seen at the
 * next read).
 */
export async function waitFor(ctx: ClientContext, id: string, options: { timeout?: Duration } = {}): Promise<Instance> {
  checkId(id, "wait: id", (m) => new ValidationError(m));
  const timeoutMs =
    options.timeout === undefined ? undefined : toMs(options.timeout, "wait: timeout", (m) => new ValidationError(m));
  const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
  let pause = 10;
  for (;;) {
    const instance = await getInstance(ctx, id);
    if (!instance) throw new UnknownInstanceError(id);
    if (TERMINAL.has(instance.status)) return instance;
    if (Date.now() >= deadline) throw new WaitTimeoutError(id, timeoutMs!);
    await nextChange(ctx, id, Math.min(pause, deadline - Date.now()));
    pause = Math.min(pause * 2, 250);
  }
}

/** Sleeps up to `ms`, waking early when this node finishes the instance. */
function nextChange(ctx: ClientContext, id: string, ms: number): Promise<void> {
  return new Promise((resolve) => {
    const offs: Array<() => void> = [];
    const done = () => {
      clearTimeout(timer);
      for (const off of offs) off();
      resolve();
    };
    const timer = setTimeout(done, ms);
    for (const event of ["instance:done", "instance:failed", "instance:cancelled"] as const) {
      offs.push(ctx.events.on(event, (e) => e.id === id && done()));
    }
  });
}
