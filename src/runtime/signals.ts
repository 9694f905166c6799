/**
 * Signals: durable delivery into an instance's mailbox (or a correlation key's
 * inbox), and resumption of an awaiting instance once its spec is satisfied.
 * Consumption and resumption commit together; see sql/signals.ts for why the
 * lock-then-read order makes the signal/await race safe. A signal's delivery
 * is one statement (deliver_signal, migration 0022); an await's own resume and
 * a timeout's are here.
 */
import type pg from "pg";
import { withTransaction } from "../db/pool.js";
import { InstanceTerminatedError, UnknownInstanceError } from "../errors.js";
import type { Queryable } from "../sql/query.js";
import type { MailboxRow, SignalQueries } from "../sql/signals.js";
import type { TraceCarrier } from "../telemetry/propagation.js";
import { matchSpec, partialMatch, type NormalizedSpec } from "./await-spec.js";
import type { SignalCheck } from "./typed-client.js";

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
  /** The payload's check against the target's machine (see SignalCheck), decided before it is sent. */
  check?: Awaited<ReturnType<SignalCheck>>;
}

export interface DeliverResult {
  /** Id of the stored signal, or null when its dedup key was seen before. */
  signalId: string | null;
  instanceId: string | null;
  /** Queue to wake after the commit: the signal resumed its instance, or held a runnable one's lock. */
  resumedQueue: string | null;
}

/**
 * One statement (deliver_signal): on the pool it commits on its own, in a caller's transaction it
 * commits with it. Nothing is stored when it throws.
 */
export async function deliverSignal(db: Queryable, q: SignalQueries, input: DeliverInput): Promise<DeliverResult> {
  const byKey = typeof input.target === "string";
  const key = byKey ? (input.target as string) : (input.target as { id: string }).id;
  const { rows } = await q.deliver(db, {
    target: key,
    byId: !byKey,
    event: input.event,
    payload: input.payloadJson,
    dedupKey: input.dedupKey,
    keep: byKey && input.keepIfMissing,
    retentionMs: input.inboxRetentionMs,
    traceContext: input.traceContext ? JSON.stringify(input.traceContext) : null,
    channel: input.notifyChannel,
    machineIs: input.check?.machineIs?.name ?? null,
    machineNot: [...(input.check?.refused.keys() ?? [])],
  });
  const row = rows[0]!;
  const label = byKey ? `with correlation key ${JSON.stringify(key)}` : key;
  switch (row.outcome) {
    case "delivered":
      return { signalId: row.signal_id, instanceId: row.instance_id, resumedQueue: row.wake_queue };
    case "kept":
      return { signalId: row.signal_id, instanceId: null, resumedQueue: null };
    case "duplicate":
      return { signalId: null, instanceId: row.instance_id, resumedQueue: null };
    case "terminated":
      throw new InstanceTerminatedError(label, row.status!);
    case "missing":
      throw new UnknownInstanceError(label);
    case "refused": {
      const machine = row.machine!;
      const is = input.check?.machineIs;
      if (is && is.name !== machine) throw is.refused(machine);
      throw input.check?.refused.get(machine);
    }
  }
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
