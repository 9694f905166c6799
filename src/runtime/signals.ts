/**
 * Signals: durable delivery into an instance's mailbox (or a correlation key's
 * inbox), and resumption of an awaiting instance once its spec is satisfied.
 * Consumption and resumption commit together; see sql/signals.ts for why the
 * lock-then-read order makes the signal/await race safe.
 */
import type pg from "pg";
import { withTransaction } from "../db/pool.js";
import { InstanceTerminatedError, UnknownInstanceError } from "../errors.js";
import type { MailboxRow, SignalQueries } from "../sql/signals.js";
import { isTerminal } from "../status.js";
import type { TraceCarrier } from "../telemetry/propagation.js";
import { matchSpec, partialMatch, type NormalizedSpec } from "./await-spec.js";

export interface DeliverInput {
  target: string | { id: string };
  event: string;
  payloadJson: string | null;
  dedupKey: string | null;
  keepIfMissing: boolean;
  inboxRetentionMs: number;
  /** NOTIFY channel for the resume, sent with the commit of the transaction that delivers the signal. */
  notifyChannel: string | null;
  /** The sender's trace context (see telemetry/propagation.ts); the step it resumes links to it. */
  traceContext?: TraceCarrier | null;
  /** Checks the payload against the live target's machine (throws a ValidationError), before anything is stored. */
  check?: (machine: string) => Promise<void>;
}

export interface DeliverResult {
  /** Id of the stored signal, or null when its dedup key was seen before. */
  signalId: string | null;
  instanceId: string | null;
  /** Queue to wake after the commit: the signal resumed its instance, or held a runnable one's lock. */
  resumedQueue: string | null;
}

/** Runs inside a transaction on `client`. */
export async function deliverSignal(
  client: pg.ClientBase,
  q: SignalQueries,
  input: DeliverInput,
): Promise<DeliverResult> {
  const byKey = typeof input.target === "string";
  const key = byKey ? (input.target as string) : (input.target as { id: string }).id;
  // A kept signal must not slip past an insert of its key in flight: take the key's lock, then look.
  if (byKey && input.keepIfMissing) await q.lockInboxKey(client, { correlationKey: key });
  const { rows } = byKey
    ? await q.lockLiveByKey(client, { correlationKey: key })
    : await q.lockById(client, { id: key });
  const instance = rows[0];
  const label = byKey ? `with correlation key ${JSON.stringify(key)}` : key;

  if (!instance || isTerminal(instance.status)) {
    const last = instance ?? (byKey ? (await q.lastByKey(client, { correlationKey: key })).rows[0] : undefined);
    // A retried webhook whose signal was already delivered is harmless, even after the instance finished.
    const dedupKey = input.dedupKey;
    if (last && dedupKey !== null && (await q.seenDedupKey(client, { instanceId: last.id, dedupKey })).rowCount) {
      return { signalId: null, instanceId: last.id, resumedQueue: null };
    }
    if (byKey && input.keepIfMissing) {
      const kept = await q.insert(client, {
        ...signalOf(input),
        instanceId: null,
        correlationKey: key,
        retentionMs: input.inboxRetentionMs,
      });
      return { signalId: kept.rows[0]?.id ?? null, instanceId: null, resumedQueue: null };
    }
    if (last) throw new InstanceTerminatedError(label, last.status);
    throw new UnknownInstanceError(label);
  }

  await input.check?.(instance.machine);
  const stored = await q.insert(client, {
    ...signalOf(input),
    instanceId: instance.id,
    correlationKey: null,
    retentionMs: 0,
  });
  let resumedQueue: string | null = null;
  if (instance.status === "awaiting" && instance.await_spec) {
    resumedQueue = await tryResume(client, q, instance.id, instance.await_spec, input.notifyChannel);
  } else if (instance.status === "runnable") {
    // We hold its row lock until our commit, and a claim skips locked rows: one that ran meanwhile
    // passed it over and may have found nothing else, leaving it to the next poll. Wake the queue
    // again with our commit, so the row is claimed within milliseconds whatever the poll interval.
    if (input.notifyChannel !== null) await q.notify(client, { channel: input.notifyChannel, queue: instance.queue });
    resumedQueue = instance.queue;
  }
  return { signalId: stored.rows[0]?.id ?? null, instanceId: instance.id, resumedQueue };
}

/**
 * With the instance row locked and awaiting `spec`: if the mailbox satisfies
 * it, consume the signals and make the instance runnable. Returns its queue
 * when resumed.
 */
export async function tryResume(
  client: pg.ClientBase,
  q: SignalQueries,
  instanceId: string,
  spec: NormalizedSpec,
  notifyChannel: string | null,
): Promise<string | null> {
  const matched = matchSpec(spec, await readMailbox(client, q, instanceId, spec));
  if (!matched) return null;
  return resume(client, q, instanceId, matched, null, "resumed", notifyChannel);
}

function readMailbox(
  client: pg.ClientBase,
  q: SignalQueries,
  instanceId: string,
  spec: NormalizedSpec,
): Promise<MailboxRow[]> {
  return q.mailbox(client, { instanceId, events: spec.events }).then((r) => r.rows);
}

async function resume(
  client: pg.ClientBase,
  q: SignalQueries,
  instanceId: string,
  consumed: MailboxRow[],
  step: string | null,
  outcome: "resumed" | "timeout",
  notifyChannel: string | null,
): Promise<string | null> {
  const awaited = consumed.map((m) => ({
    id: m.id,
    event: m.event,
    payload: m.payload,
    insertedAt: m.inserted_at,
    // Not part of ctx.awaited: the resumed step's span links to each sender's context.
    ...(m.trace_context ? { traceContext: m.trace_context } : {}),
  }));
  const { rows } = await q.resume(client, {
    instanceId,
    signalIds: consumed.map((m) => m.id),
    awaited: JSON.stringify(awaited),
    channel: notifyChannel,
    step,
    outcome,
  });
  return rows[0]?.queue ?? null;
}

/**
 * Resumes awaiting instances whose timeout passed at their onTimeout step, with
 * whatever had arrived toward the spec. Each runs in its own transaction with
 * the row locked, so a timeout and a last signal racing resolve to exactly one
 * of the two: whichever locks the row first; the other finds it no longer
 * awaiting (a late signal then simply stays in the mailbox).
 */
export async function fireTimeouts(pool: pg.Pool, q: SignalQueries, batch: number): Promise<string[]> {
  return withTransaction(pool, async (client) => {
    const { rows } = await q.timedOut(client, { limit: batch });
    const queues: string[] = [];
    for (const row of rows) {
      const arrived = partialMatch(row.await_spec, await readMailbox(client, q, row.id, row.await_spec));
      const queue = await resume(client, q, row.id, arrived, row.await_spec.onTimeout, "timeout", null);
      if (queue) queues.push(queue);
    }
    return queues;
  });
}

/** The signal's own columns, wherever it is stored. */
function signalOf(input: DeliverInput) {
  const traceContext = input.traceContext ? JSON.stringify(input.traceContext) : null;
  return { event: input.event, payload: input.payloadJson, dedupKey: input.dedupKey, traceContext };
}
