/**
 * The transition that finished an instance with `done`, read back from the instance row.
 *
 * The group commit does not write a history row for a step that finishes its instance: the row
 * already holds the step (`step`), the attempt (`attempt`) and the time (`updated_at`, final once
 * the instance is done), and keeps the step's duration in `done_duration_ms` (migration 20). Every
 * reader of the history (engine.history, the dashboard's hour chart and graph, the CLI) adds these
 * rows to what it reads from `transitions`; instances finished before migration 20 have the column
 * null and their done in `transitions`, so nothing is counted twice.
 */

/** The columns of a transitions row, in its order, for the done kept in the instance row `i`. */
const COLUMNS =
  "i.updated_at as at, i.step as from_step, null::text as to_step, 'done'::text as outcome, i.attempt, " +
  "i.done_duration_ms as duration_ms, null::jsonb as error, null::jsonb as published";

/** Whether the instance row `i` holds its done transition. */
export const HOLDS_DONE = "i.status = 'done' and i.done_duration_ms is not null";

/**
 * A select of the done transitions kept in rows of `${schema}.instances i` matching `where` (SQL
 * over `i`), with the columns of a transitions row: at, from_step, to_step, outcome, attempt,
 * duration_ms, error, published. `schema` is quoted already.
 */
export function doneTransitions(schema: string, where: string): string {
  return `select ${COLUMNS} from ${schema}.instances i where ${HOLDS_DONE} and ${where}`;
}
