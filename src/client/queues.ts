/** engine.pauseQueue, resumeQueue and pausedQueues: queue state shared by every node. */
import { ValidationError } from "../errors.js";
import { checkName } from "../names.js";
import type { ClientContext } from "./context.js";

/** Takes effect at each node's next claim; resuming wakes every node. */
export async function setPaused(ctx: ClientContext, queue: string, paused: boolean): Promise<void> {
  ctx.assertUsable();
  checkName(queue, `${paused ? "pauseQueue" : "resumeQueue"}: queue`, (m) => new ValidationError(m));
  await ctx.sql.flow.setPaused(ctx.pool, { queue, paused });
  if (!paused) await ctx.notifyQueue(queue);
}

export async function pausedQueues(ctx: ClientContext): Promise<string[]> {
  ctx.assertUsable();
  return (await ctx.sql.flow.pausedQueues(ctx.pool, { queue: null })).rows.map((r) => r.name);
}
