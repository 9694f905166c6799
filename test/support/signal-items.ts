/**
 * An item of deliver_signals' JSON array, as the engine's SignalSender builds it: a signal by
 * correlation key, no dedup key, trace context or NOTIFY channel unless `more` sets them.
 */
export function signalItem(target: string, event: string, payload: unknown, more: Record<string, unknown> = {}) {
  return {
    byId: false,
    target,
    event,
    payload,
    dedupKey: null,
    traceContext: null,
    channel: null,
    machineIs: null,
    machineNot: [] as string[],
    ...more,
  };
}
