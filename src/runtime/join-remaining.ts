/** Children a join condition no longer needs: cancelled (with their descendants) before the join step runs. */
import type pg from "pg";
import type { ChildQueries } from "../sql/children.js";

/**
 * Cancels the live children of `parentId`'s latest spawn when its join condition resumed it while
 * some still ran, unless it asked to keep them. Each is an `engine.cancel` (its own transaction,
 * its descendants and keys handled as always); a child that finishes meanwhile is simply left as
 * it ended. Runs on every attempt of the join step until none is left, so a crash in between
 * only delays it.
 */
export async function cancelRemaining(
  pool: pg.Pool,
  q: ChildQueries,
  parentId: string,
  cancel: (id: string, reason: string) => Promise<void>,
): Promise<void> {
  const { rows } = await q.remaining(pool, { parentId });
  for (const { id } of rows) await cancel(id, `the join of instance ${parentId} no longer needs it`);
}
