/** engine.retry: a failed instance runs its failed step again, its parent's join kept consistent. */
import { withTransaction } from "../db/pool.js";
import { InvalidStateError, UnknownInstanceError, ValidationError } from "../errors.js";
import { checkId } from "../names.js";
import type { LineageRow } from "../sql/instances.js";
import type { ClientContext } from "./context.js";

export async function retryInstance(ctx: ClientContext, id: string): Promise<void> {
  ctx.assertUsable();
  checkId(id, "retry: id", (m) => new ValidationError(m));
  // A claim skips locked rows: one that met a runnable row of the lineage while this transaction
  // held it (an ancestor, or a target it refuses) left it to the next poll, so those queues are
  // woken again once it ends, either way.
  let held: string[] = [];
  try {
    await retryLocked(ctx, id, (queues) => (held = queues));
  } finally {
    for (const queue of new Set(held)) {
      ctx.wake.queue(queue);
      await ctx.notifyQueue(queue).catch(() => {});
    }
  }
}

async function retryLocked(ctx: ClientContext, id: string, locked: (runnableQueues: string[]) => void): Promise<void> {
  await withTransaction(ctx.pool, async (client) => {
    // Root first, as cancel locks a tree: a retry and a cancel of the same tree take turns.
    const { rows } = await ctx.sql.instances.lockLineage(client, { id });
    locked(rows.filter((r) => r.status === "runnable").map((r) => r.queue));
    const target = rows.find((r) => r.id === id);
    if (!target) throw new UnknownInstanceError(id);
    if (target.status !== "failed")
      throw new InvalidStateError(`retry: instance ${id} is ${target.status}; only failed instances can be retried`);
    const cancelled = rows.find((r) => r.id !== id && r.status === "cancelled");
    if (cancelled)
      throw new InvalidStateError(`retry: instance ${id} cannot run again: its ancestor ${cancelled.id} was cancelled`);
    // A parent that was pruned waits for nothing: the child is retried like any instance.
    const parent = rows.find((r) => r.id === target.parent_id);
    const join = parent ? parentJoin(id, target, parent) : "none";
    await ctx.sql.instances.retry(client, { id, channel: ctx.config.channel, parentId: parent?.id ?? null, join });
  });
}

/**
 * What the parent's join must do when its child is retried: "count" (the sweep had counted the
 * child: one more to wait for), "reopen" (the parent joined but its join step has not started:
 * back to joining), or "none". Refused once the join step has started: a new outcome would
 * reach no join.
 */
function parentJoin(id: string, target: LineageRow, parent: LineageRow): "none" | "count" | "reopen" {
  if (parent.children_from === null || BigInt(id) < BigInt(parent.children_from)) {
    throw new InvalidStateError(
      `retry: instance ${id} is a child of an earlier spawn of instance ${parent.id}, whose join has run: ` +
        "a new outcome would reach no join",
    );
  }
  // The join step reads ctx.children when it starts: until then the join can wait for this child again.
  const joinNotStarted = parent.status === "joining" || (parent.status === "runnable" && parent.joined);
  if (!joinNotStarted) {
    throw new InvalidStateError(
      `retry: instance ${id} is a child of instance ${parent.id}, which has already joined on its children ` +
        `(it is ${parent.status} now): a new outcome would reach no join; retry the parent instead if its join ` +
        "step failed",
    );
  }
  return parent.status === "runnable" ? "reopen" : target.join_counted ? "count" : "none";
}
