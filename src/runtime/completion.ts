import type { OutcomeRow } from "../sql/claims.js";
import type { JoinRule } from "./join-rule.js";

/**
 * A step's outcome: one row of the group-commit statement (sql/claims.ts `complete`, whose
 * OutcomeRow declares the columns it writes), and what the commit's transaction does besides.
 */
export interface Completion extends OutcomeRow {
  /** A spawn's join condition (join-rule.ts), written with its children; null: every child. */
  join_rule?: JoinRule | null;
  /** Values the step published (ctx.publish), stored in the commit's transaction (not by `complete`). */
  publish?: Record<string, unknown>;
  /** Children to insert with a spawn (not part of the row written by `complete`). */
  spawn?: import("./insert.js").InsertRow[];
}
