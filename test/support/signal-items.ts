/**
 * deliver_signals' JSON array, built by the engine's own builder (SignalSender's): signals by
 * correlation key, no dedup key, trace context or NOTIFY channel; `refused` names the machines
 * whose signal schema refuses the payload (the item's machineNot).
 */
import { batchItems } from "../../src/runtime/signals.js";

export interface SignalItem {
  target: string;
  event: string;
  payload: unknown;
  refused?: string[];
}

export function signalItems(items: SignalItem[]): string {
  return batchItems(
    items.map(({ target, event, payload, refused = [] }) => ({
      target,
      event,
      payloadJson: JSON.stringify(payload),
      dedupKey: null,
      keepIfMissing: false,
      inboxRetentionMs: 0,
      notifyChannel: null,
      check: { machineIs: null, refused: new Map(refused.map((machine) => [machine, undefined])) },
    })),
  );
}
