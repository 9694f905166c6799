/**
 * The vacuum watch, on every node with queues: a few seconds after start and
 * then once a minute it reads the hot tables' health (telemetry/table-health.ts)
 * and warns — an `engine:warning` event and a log line — when autovacuum cannot
 * run on them or their dead tuples pile up (each warning once, then every 15
 * minutes while it holds). Reads catalog views only.
 */
import type { Logger } from "../logger.js";
import { VacuumWatch } from "../telemetry/table-health.js";
import type { LoopDeps } from "./deps.js";
import { Loop } from "./loop.js";

export interface TablesDeps extends LoopDeps {
  schema: string;
  logger: Logger;
}

const INTERVAL_MS = 60_000;

export function tablesLoop(deps: TablesDeps): Loop {
  const watch = new VacuumWatch({ pool: deps.pool, schema: deps.schema, events: deps.events, logger: deps.logger });
  return new Loop({
    name: "tables",
    intervalMs: INTERVAL_MS,
    initialDelayMs: 1000 + Math.random() * 4000,
    onError: deps.onError,
    tick: async () => void (await watch.check()),
  });
}
