/**
 * The statuses of an instance, in one place: the `Status` type, the list of
 * them, and the terminal ones (after which nothing runs again but `retry` of a
 * failed instance), as a set for TypeScript and as a SQL list for queries.
 * The schema's check constraint and partial indexes (src/sql/migrations/)
 * spell the same names; a migration cannot import them.
 */

/**
 * Where an instance is: live (`runnable`, `running`, `awaiting`, `joining`) or terminal (`done`, `failed`,
 * `cancelled`).
 */
export type Status = "runnable" | "running" | "awaiting" | "joining" | "done" | "failed" | "cancelled";

/** The terminal statuses: the instance runs no step again (unless a failed one is retried). */
export type TerminalStatus = Extract<Status, "done" | "failed" | "cancelled">;

/** Every status, the live ones first. */
export const STATUSES: readonly Status[] = [
  "runnable",
  "running",
  "awaiting",
  "joining",
  "done",
  "failed",
  "cancelled",
];

const TERMINAL_LIST: readonly TerminalStatus[] = ["done", "failed", "cancelled"];

/** The terminal statuses. Typed for any string, so a status read from a row needs no cast. */
export const TERMINAL: ReadonlySet<string> = new Set<string>(TERMINAL_LIST);

/** The terminal statuses as a SQL list, for `status in ${TERMINAL_SQL}` and `status not in ${TERMINAL_SQL}`. */
export const TERMINAL_SQL = `(${TERMINAL_LIST.map((status) => `'${status}'`).join(", ")})`;

/** Whether `status` is terminal: done, failed or cancelled. */
export function isTerminal(status: string): status is TerminalStatus {
  return TERMINAL.has(status);
}
