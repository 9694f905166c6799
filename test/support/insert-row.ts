/** A row of the insert statements' input (src/sql/instances.ts) for a plain job: no key, no option set. */
import type { InsertRow } from "../../src/sql/instances.js";

export const PLAIN_ROW: InsertRow = {
  idx: 0,
  machine: "Noop",
  step: "perform",
  state: '{"i":0}',
  queue: "default",
  priority: 0,
  run_at: null,
  delay_ms: null,
  max_attempts: null,
  correlation_key: null,
  concurrency_key: null,
  concurrency_limit: null,
  parent_id: null,
  trace_context: null,
  idempotency_key: null,
  if_exists: null,
  version: 1,
};
