/** engine.signal: the arguments checked, the signal delivered (and its instance resumed) in one statement. */
import { assertReadCommitted } from "../db/pool.js";
import { describe } from "../duration.js";
import { ValidationError } from "../errors.js";
import type { SignalOptions, SignalResult } from "../instance.js";
import { encodeJson } from "../json.js";
import { checkId, checkKey, checkName } from "../names.js";
import { deliverSignal, type DeliverInput, type DeliverResult } from "../runtime/signals.js";
import { rejectUnknownKeys } from "../suggest.js";
import type { SignalCheck } from "../runtime/typed-client.js";
import { captureTraceContext } from "../telemetry/propagation.js";
import { beginWrite, type ClientContext } from "./context.js";

export async function sendSignal(
  ctx: ClientContext,
  target: string | { id: string },
  event: string,
  payload: unknown,
  options: SignalOptions = {},
  check?: SignalCheck,
): Promise<SignalResult> {
  ctx.assertUsable();
  const bad = (m: string) => new ValidationError(`signal: ${m}`);
  rejectUnknownKeys(options ?? {}, ["client", "dedupKey", "ifMissing"], "signal", (m) => new ValidationError(m));
  if (typeof target === "string") checkKey(target, "the target correlation key", bad);
  else if (typeof target !== "object" || target === null || !("id" in target)) {
    throw bad(`target must be a correlation key (string) or { id }, got ${describe(target)}`);
  } else checkId(target.id, "id", bad);
  checkName(event, "event", bad);
  const payloadJson = encodeJson(payload ?? null, `signal "${event}" payload`, ctx.config.maxPayloadBytes);
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
    inboxRetentionMs: ctx.config.signalRetentionMs,
    // In the caller's transaction the NOTIFY goes out with its commit (see beginWrite otherwise).
    notifyChannel: ctx.config.channel,
    traceContext: captureTraceContext(),
    check: await check?.(),
  };
  if (options.client) {
    const why =
      "a signal locks its instance and then reads its mailbox, and a stricter snapshot misses an instance or " +
      "signals committed in between (the signal would be kept in the inbox, or an await never resume)";
    await assertReadCommitted(options.client, "signal", why);
  }
  // One statement: in the caller's transaction, or on the pool (committed, synchronously, before it
  // returns; with other signals of this engine sent at the same time).
  const delivered = options.client
    ? await deliverSignal(options.client, ctx.sql.signals, input)
    : await deliverOnPool(ctx, input);
  return { signalId: delivered.signalId, instanceId: delivered.instanceId, duplicate: delivered.signalId === null };
}

/** A signal not in a caller's transaction: committed when it returns, the instance it resumed woken. */
async function deliverOnPool(ctx: ClientContext, input: DeliverInput): Promise<DeliverResult> {
  const write = beginWrite(ctx);
  try {
    const delivered = await ctx.signals.send({ ...input, notifyChannel: write.channel });
    if (delivered.resumedQueue) write.due(delivered.resumedQueue);
    return delivered;
  } finally {
    write.end();
  }
}
