/**
 * Published values: `ctx.publish(key, value)` records a value for the outside
 * world (a payment URL a step created, a progress figure), committed with the
 * step's outcome or not at all; `engine.waitForEvent` resolves with it. The
 * commit sends NOTIFY on the engine's channel with a payload no queue name can
 * have (queue names exclude control characters), so every node's listener
 * tells a publication from a queue's wake-up; waiters poll at the engine's
 * poll interval as well, so a lost notification (or a node without a listener)
 * only delays them.
 */
import type pg from "pg";
import { describe, toMs, type Duration } from "../duration.js";
import { EventTimeoutError, InstanceTerminatedError, UnknownInstanceError, ValidationError } from "../errors.js";
import { encodeJson } from "../json.js";
import { checkId, checkKey, checkName } from "../names.js";
import { setLongTimeout } from "../timers.js";
import type { PublishedQueries, PublishedRow } from "../sql/published.js";
import { isTerminal } from "../status.js";
import type { Completion } from "./completion.js";

const NOTICE = "\u0001published:";

/** Checks one ctx.publish call where it is made: a name-like key and a JSON value. */
export function checkPublish(key: unknown, value: unknown, where: string): string {
  const name = checkName(key, `${where}: ctx.publish key`, (m) => new ValidationError(m));
  if (value === undefined) throw new ValidationError(`${where}: ctx.publish(${JSON.stringify(name)}) needs a value`);
  encodeJson(value, `${where}: the value published as ${JSON.stringify(name)}`, Infinity);
  return name;
}

/** What a step published, as the completion carries it: bounded like a state (maxPayloadBytes). */
export function publishedOf(values: ReadonlyMap<string, unknown> | undefined, where: string, maxBytes: number) {
  if (!values || values.size === 0) return undefined;
  const publish = Object.fromEntries(values);
  encodeJson(publish, `the values published by ${where}`, maxBytes);
  return publish;
}

/**
 * Writes a completion's published values in its commit's transaction, after the outcome's UPDATE
 * (which holds the row lock). Over the bound, the whole commit is refused with a ValidationError.
 */
export async function storePublished(
  client: pg.ClientBase,
  q: PublishedQueries,
  completion: Completion,
  channel: string,
  maxBytes: number,
): Promise<void> {
  const values = JSON.stringify(completion.publish);
  const { rowCount } = await q.store(client, {
    id: completion.id,
    values,
    fromStep: completion.from_step,
    channel,
    maxBytes,
    notice: NOTICE + completion.id,
  });
  if (rowCount === 0) {
    throw new ValidationError(
      `the values published by instance ${completion.id} would exceed ${maxBytes} bytes of JSON in all ` +
        `(maxPayloadBytes); publish fewer or smaller values, or reuse keys`,
    );
  }
}

/** The waiters of this node, woken by the listener's notifications. */
export class PublishedWaiters {
  private readonly waiters = new Map<string, Set<() => void>>();

  /** Handles a NOTIFY payload; false when it is not a publication (it is a queue to wake). */
  onNotify(payload: string): boolean {
    if (!payload.startsWith(NOTICE)) return false;
    for (const wake of this.waiters.get(payload.slice(NOTICE.length)) ?? []) wake();
    return true;
  }

  /** Arms a wake-up for instance `id` before its values are read, so a publication in between is not missed. */
  arm(id: string, ms: number): { woken: Promise<void>; disarm: () => void } {
    let wake!: () => void;
    const woken = new Promise<void>((resolve) => (wake = resolve));
    // `ms` may be the poll interval, which may exceed Node's largest timer: setLongTimeout waits in chunks.
    const timer = setLongTimeout(wake, ms);
    let set = this.waiters.get(id);
    if (!set) this.waiters.set(id, (set = new Set()));
    set.add(wake);
    const disarm = () => {
      timer.clear();
      set.delete(wake);
      if (set.size === 0 && this.waiters.get(id) === set) this.waiters.delete(id);
    };
    return { woken, disarm };
  }
}

export type EventTarget = string | { id: string } | { correlationKey: string };

export interface WaitForEventDeps {
  pool: pg.Pool;
  q: PublishedQueries;
  waiters: PublishedWaiters;
  pollMs: number;
}

type Lookup = (key: string) => Promise<{ rows: PublishedRow[] }>;

/** How to read the target (checked now, before the key) and how to name it in errors. */
function lookupFor(deps: WaitForEventDeps, target: EventTarget, bad: (m: string) => Error): [Lookup, string] {
  const isObject = typeof target === "object" && target !== null;
  if (isObject && "correlationKey" in target) {
    const correlationKey = checkKey(target.correlationKey, "correlationKey", bad);
    return [
      (key) => deps.q.byKey(deps.pool, { correlationKey, key }),
      `with correlation key ${JSON.stringify(correlationKey)}`,
    ];
  }
  const raw = typeof target === "string" ? target : isObject && "id" in target ? target.id : undefined;
  if (raw === undefined) throw bad(`expected an id, { id } or { correlationKey }, got ${describe(target)}`);
  const id = checkId(raw, "id", bad);
  return [(key) => deps.q.byId(deps.pool, { id, key }), id];
}

/**
 * Resolves with the value instance `target` published as `key`: at once when it already has, else
 * when the commit that publishes it lands. Throws UnknownInstanceError for no such instance,
 * InstanceTerminatedError when it finished without publishing the key, EventTimeoutError after `timeout`.
 */
export async function waitForEvent(
  deps: WaitForEventDeps,
  target: EventTarget,
  key: string,
  options: { timeout?: Duration } = {},
): Promise<unknown> {
  const bad = (m: string) => new ValidationError(`waitForEvent: ${m}`);
  const [lookup, label] = lookupFor(deps, target, bad);
  const eventKey = checkName(key, "event key", bad);
  const timeoutMs = options.timeout === undefined ? undefined : toMs(options.timeout, "timeout", bad);
  const deadline = timeoutMs === undefined ? Infinity : Date.now() + timeoutMs;
  let armed: { id: string; woken: Promise<void>; disarm: () => void } | undefined;
  try {
    for (;;) {
      const { rows } = await lookup(eventKey);
      const row = rows[0];
      if (!row) throw new UnknownInstanceError(label);
      if (row.has) return row.value;
      if (isTerminal(row.status)) throw new InstanceTerminatedError(label, row.status);
      const left = deadline - Date.now();
      if (left <= 0) throw new EventTimeoutError(label, eventKey, timeoutMs!);
      if (armed?.id !== row.id) {
        // First look (or the key now names another instance): arm, then read again before sleeping.
        armed?.disarm();
        armed = { id: row.id, ...deps.waiters.arm(row.id, Math.min(deps.pollMs, left)) };
        continue;
      }
      await armed.woken;
      armed.disarm();
      armed = { id: row.id, ...deps.waiters.arm(row.id, Math.min(deps.pollMs, Math.max(0, deadline - Date.now()))) };
    }
  } finally {
    armed?.disarm();
  }
}
