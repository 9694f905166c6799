import type { OutcomeRow } from "../../src/sql/claims.js";

/** A plain `done` as the group commit (sql/claims.ts `complete`) takes it, for tests that call the statement. */
export function doneOutcome(id: string, token = "1"): OutcomeRow {
  return {
    id,
    token,
    concurrency_key: null,
    status: "done",
    step: null,
    set_state: false,
    state: null,
    run_at: null,
    delay_ms: null,
    priority: null,
    attempt_op: "keep",
    result: null,
    error: null,
    await_spec: null,
    children_pending: null,
    joined: null,
    from_step: "start",
    to_step: null,
    outcome: "done",
    attempt: 1,
    duration_ms: 0,
    hist_error: null,
  };
}
