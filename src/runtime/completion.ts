import type { Status } from "../status.js";
import type { JoinRule } from "./join-rule.js";

/** A step's outcome as one row of the group-commit statement (sql/claims.ts `complete`). */
export interface Completion {
  id: string;
  token: string;
  /** Not written: orders the batch (see Completer.commit). */
  concurrency_key: string | null;
  status: Status;
  /** New current step; null keeps it. */
  step: string | null;
  set_state: boolean;
  state: unknown;
  run_at: string | null;
  delay_ms: number | null;
  priority: number | null;
  attempt_op: "reset" | "keep" | "refund";
  result: unknown;
  error: unknown;
  await_spec: unknown;
  /** Set when parking as joining: children still to finish. */
  children_pending: number | null;
  /** The next step runs as a join (ctx.children is loaded for it). */
  joined: boolean | null;
  from_step: string;
  to_step: string | null;
  outcome: string;
  attempt: number;
  duration_ms: number;
  hist_error: unknown;
  /** Set when routing to the onFailure step: what failed (ctx.failure). */
  failure?: { error: unknown; step: string; attempts: number };
  /** Postponed by this rate limit, waiting in its line. */
  rate_limited?: string;
  /** A spawn's join condition (join-rule.ts), written with its children; null: every child. */
  join_rule?: JoinRule | null;
  /** Values the step published (ctx.publish), stored in the commit's transaction (not by `complete`). */
  publish?: Record<string, unknown>;
  /** Children to insert with a spawn (not part of the row written by `complete`). */
  spawn?: import("./insert.js").InsertRow[];
}
