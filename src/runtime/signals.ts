/**
 * Signals: durable delivery into an instance's mailbox (or a correlation key's
 * inbox), and resumption of an awaiting instance once its spec is satisfied.
 * Consumption and resumption commit together; see sql/signals.ts for why the
 * lock-then-read order makes the signal/await race safe.
 */
import type pg from "pg";
import { InstanceTerminatedError, UnknownInstanceError } from "../errors.js";
import type { SignalQueries } from "../sql/signals.js";
import { matchSpec, type NormalizedSpec } from "./await-spec.js";

interface LockedInstance {
  id: string;
  status: string;
  queue: string;
  step: string;
  await_spec: NormalizedSpec | null;
}

export interface DeliverInput {
  target: string | { id: string };
  event: string;
  payloadJson: string | null;
  dedupKey: string | null;
  keepIfMissing: boolean;
  inboxRetentionMs: number;
  /** NOTIFY channel to use inside the statement (caller's transaction), or null to wake after commit. */
  notifyChannel: string | null;
}

export interface DeliverResult {
  /** Id of the stored signal, or null when its dedup key was seen before. */
  signalId: string | null;
  instanceId: string | null;
  /** Queue to wake when the signal resumed its instance. */
  resumedQueue: string | null;
}

/** Runs inside a transaction on `client`. */
export async function deliverSignal(client: pg.ClientBase, q: SignalQueries, input: DeliverInput): Promise<DeliverResult> {
  const byKey = typeof input.target === "string";
  const lookup = byKey ? q.lockLiveByKey : q.lockById;
  const key = byKey ? (input.target as string) : (input.target as { id: string }).id;
  const { rows } = await client.query<LockedInstance>(lookup, [key]);
  const instance = rows[0];
  const label = byKey ? `with correlation key ${JSON.stringify(key)}` : key;

  if (!instance || ["done", "failed", "cancelled"].includes(instance.status)) {
    if (instance) throw new InstanceTerminatedError(label, instance.status);
    if (byKey && input.keepIfMissing) {
      const kept = await client.query<{ id: string }>(q.insert, [null, key, input.event, input.payloadJson, input.dedupKey, input.inboxRetentionMs]);
      return { signalId: kept.rows[0]?.id ?? null, instanceId: null, resumedQueue: null };
    }
    if (byKey) {
      const last = await client.query<{ status: string }>(q.lastStatusByKey, [key]);
      if (last.rows[0]) throw new InstanceTerminatedError(label, last.rows[0].status);
    }
    throw new UnknownInstanceError(label);
  }

  const stored = await client.query<{ id: string }>(q.insert, [instance.id, null, input.event, input.payloadJson, input.dedupKey, 0]);
  let resumedQueue: string | null = null;
  if (instance.status === "awaiting" && instance.await_spec) {
    resumedQueue = await tryResume(client, q, instance.id, instance.await_spec, input.notifyChannel);
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
  const mailbox = await client.query<{ id: string; event: string; payload: unknown; inserted_at: Date }>(q.mailbox, [instanceId, spec.events]);
  const matched = matchSpec(spec, mailbox.rows);
  if (!matched) return null;
  const awaited = matched.map((m) => ({ id: m.id, event: m.event, payload: m.payload, insertedAt: m.inserted_at }));
  const resumed = await client.query<{ queue: string }>(q.resume, [instanceId, matched.map((m) => m.id), JSON.stringify(awaited), notifyChannel]);
  return resumed.rows[0]?.queue ?? null;
}
