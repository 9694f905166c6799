/**
 * Signals: durable delivery into an instance's mailbox (or a correlation key's
 * inbox), and resumption of an awaiting instance once its spec is satisfied.
 * Consumption and resumption commit together; see sql/signals.ts for why the
 * lock-then-read order makes the signal/await race safe. A signal's delivery
 * is one statement (deliver_signal, migration 0022); an await's own resume and
 * a timeout's are here.
 */
import type pg from "pg";
import { isConnectionError, withTransaction } from "../db/pool.js";
import { InstanceTerminatedError, UnknownInstanceError } from "../errors.js";
import type { Queryable } from "../sql/query.js";
import type { DeliverRow, MailboxRow, SignalQueries } from "../sql/signals.js";
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
  const { rows } = await q.deliver(db, deliverArgs(input));
  return settle(db, q, input, rows[0]!);
}

function deliverArgs(input: DeliverInput) {
  const byKey = typeof input.target === "string";
  const key = byKey ? (input.target as string) : (input.target as { id: string }).id;
  return {
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
  };
}

async function settle(db: Queryable, q: SignalQueries, input: DeliverInput, row: DeliverRow): Promise<DeliverResult> {
  const byKey = typeof input.target === "string";
  const key = byKey ? (input.target as string) : (input.target as { id: string }).id;
  const label = byKey ? `with correlation key ${JSON.stringify(key)}` : key;
  switch (row.outcome) {
    case "delivered":
      return { signalId: row.signal_id, instanceId: row.instance_id, resumedQueue: row.wake_queue };
    case "kept":
      return { signalId: row.signal_id, instanceId: null, resumedQueue: null };
    case "duplicate":
      return { signalId: null, instanceId: row.instance_id, resumedQueue: null };
    case "terminated":
      // The database checks the machine of live instances only. A finished one of a machine the
      // signal does not fit is refused as a live one is: the target is wrong, whatever its status.
      throw (await refusal(db, q, input, row.instance_id!)) ?? new InstanceTerminatedError(label, row.status!);
    case "missing":
      throw new UnknownInstanceError(label);
    case "single":
      throw new Error(`signal: outcome "single" of a signal delivered alone`);
    case "refused":
      throw refusedFor(input, row.machine!);
  }
}

/** The error for a signal whose check refuses `machine`, or undefined when it fits. */
function refusedFor(input: DeliverInput, machine: string): unknown {
  const is = input.check?.machineIs;
  if (is && is.name !== machine) return is.refused(machine);
  return input.check?.refused.get(machine);
}

/** Why the signal does not fit the finished instance `id`, if it does not; asked only when there is a check. */
async function refusal(db: Queryable, q: SignalQueries, input: DeliverInput, id: string): Promise<unknown> {
  const { check } = input;
  if (!check || (check.machineIs === null && check.refused.size === 0)) return undefined;
  const { rows } = await q.machineOf(db, { id });
  return rows[0] ? refusedFor(input, rows[0].machine) : undefined;
}

interface PendingSignal {
  input: DeliverInput;
  /** Its target, as this engine names it: signals to one target go one statement after another. */
  target: string;
  resolve: (r: DeliverResult) => void;
  reject: (e: unknown) => void;
}

/** Signals one statement delivers at most. */
const MAX_BATCH = 100;

/**
 * Sends an engine's signals (those not in a caller's transaction) with deliver_signals, which
 * never waits for an instance's row or key lock. While `maxInFlight` of those statements are running, further signals
 * wait, and go together in the next one (one commit for all); an engine that signals one at a time
 * sends each as soon as it comes, with no added wait. Signals to one target are
 * never in two statements at once (they would contend for its row): a signal waits while its
 * target is in flight, and goes in the next statement, in arrival order. A signal the batch could
 * not take without waiting (its row locked by someone else, a concurrency key, no live instance)
 * is sent alone at once (after any signal to its target ahead of it in the batch), where it waits
 * its turn without holding up the others. Each signal()'s promise resolves after the commit that
 * stored it.
 *
 * A signal that comes when no statement is in flight goes alone, straight to deliver_signal: the
 * batch function's extra work (its JSON items, the pass that locks the rows) makes a batch of one
 * about twice a lone delivery's server time (150 against 70-90 us, measured in a loop inside
 * Postgres), and a batch of one whose row is locked comes back to be sent alone anyway. It may
 * wait for that row while holding a slot, but only one slot: every other statement started while
 * it was in flight is a batch, which never waits.
 */
export class SignalSender {
  private queue: PendingSignal[] = [];
  private inFlight = 0;
  /** Targets with a signal in a statement now, and how many. */
  private readonly busy = new Map<string, number>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly q: SignalQueries,
    private readonly maxInFlight: number,
  ) {}

  send(input: DeliverInput): Promise<DeliverResult> {
    // Keeping a signal takes the key's inbox lock first: always alone (see deliver_signal).
    if (input.keepIfMissing && typeof input.target === "string") return deliverSignal(this.pool, this.q, input);
    const target = typeof input.target === "string" ? `key:${input.target}` : `id:${input.target.id}`;
    return new Promise((resolve, reject) => {
      this.queue.push({ input, target, resolve, reject });
      this.kick();
    });
  }

  private kick(): void {
    while (this.inFlight < this.maxInFlight) {
      const batch = this.take();
      if (batch.length === 0) return;
      const lone = this.inFlight === 0 && batch.length === 1;
      this.inFlight++;
      const sent = lone
        ? this.settle(batch[0]!, () => deliverSignal(this.pool, this.q, batch[0]!.input))
        : this.write(batch);
      void sent.finally(() => {
        this.inFlight--;
        this.kick();
      });
    }
  }

  /** The next statement's signals: the oldest whose target is not in flight (with any of theirs queued after). */
  private take(): PendingSignal[] {
    const batch: PendingSignal[] = [];
    const taken = new Set<string>();
    const rest: PendingSignal[] = [];
    for (const p of this.queue) {
      if (batch.length < MAX_BATCH && (taken.has(p.target) || !this.busy.has(p.target))) {
        batch.push(p);
        taken.add(p.target);
      } else rest.push(p);
    }
    this.queue = rest;
    for (const p of batch) this.busy.set(p.target, (this.busy.get(p.target) ?? 0) + 1);
    return batch;
  }

  private done(p: PendingSignal): void {
    const n = this.busy.get(p.target)! - 1;
    if (n === 0) this.busy.delete(p.target);
    else this.busy.set(p.target, n);
  }

  /** Resolves when the statement returned: signals it sends on alone settle later, without holding a slot. */
  private async write(batch: PendingSignal[]): Promise<void> {
    let rows: Array<DeliverRow & { idx: number }>;
    try {
      ({ rows } = await this.q.deliverMany(this.pool, { items: batchItems(batch.map((p) => p.input)) }));
    } catch (error) {
      // The statement rolled back: nothing of it is stored (a broken connection leaves it unknown,
      // as for a signal sent alone). Otherwise one bad item must not sink the others: each alone.
      if (isConnectionError(error)) {
        for (const p of batch) this.settle(p, () => Promise.reject(error));
        return;
      }
      this.alone(batch);
      return;
    }
    const single: PendingSignal[] = [];
    for (const row of rows) {
      const p = batch[row.idx]!;
      if (row.outcome === "single") single.push(p);
      else this.settle(p, () => settle(this.pool, this.q, p.input, row));
    }
    this.alone(single);
  }

  /**
   * Sends each signal in a statement of its own. Those to one target go one after the other, in
   * arrival order: sent together, they would queue for its row in whatever order they reached
   * the server, and be stored in that order.
   */
  private alone(signals: PendingSignal[]): void {
    const byTarget = new Map<string, PendingSignal[]>();
    for (const p of signals) {
      const same = byTarget.get(p.target);
      if (same) same.push(p);
      else byTarget.set(p.target, [p]);
    }
    for (const same of byTarget.values()) {
      void (async () => {
        for (const p of same) {
          await this.settle(p, () => deliverSignal(this.pool, this.q, p.input));
          this.kick();
        }
      })();
    }
  }

  private async settle(p: PendingSignal, result: () => Promise<DeliverResult>): Promise<void> {
    try {
      p.resolve(await result());
    } catch (error) {
      p.reject(error);
    } finally {
      this.done(p);
    }
  }
}

/** deliver_signals' `items`: each payload spliced in as the JSON it already is. */
export function batchItems(inputs: DeliverInput[]): string {
  const items = inputs.map((input) => {
    const { payload, retentionMs: _r, keep: _k, traceContext: _t, ...rest } = deliverArgs(input);
    const fields = JSON.stringify({ ...rest, traceContext: input.traceContext ?? null });
    return `{"payload":${payload ?? "null"},${fields.slice(1)}`;
  });
  return `[${items.join(",")}]`;
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
