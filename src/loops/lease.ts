/**
 * Lease renewal, on every node with queues: every third of a lease, extends the
 * leases of every step this node runs or holds claimed ahead, in one statement
 * on a connection of its own (see src/runtime/leases.ts), and refreshes the
 * node's heartbeat row (what `explain` and `status` call a live node). A lease
 * found lost aborts its step.
 */
import type { Leases } from "../runtime/leases.js";
import type { ClockWatch } from "./clock-skew.js";
import type { FlowQueries } from "../sql/flow.js";
import type { LoopDeps } from "./deps.js";
import { Loop } from "./loop.js";

/** This node, as its heartbeat row records it (for explain and `status`). */
export interface NodeInfo {
  id: string;
  machines: string[];
  queues: string[];
  leaseMs: number;
}

export interface LeaseLoopDeps extends Pick<LoopDeps, "events" | "onError"> {
  leases: Leases;
  flow: FlowQueries;
  node: NodeInfo;
  /** Compares the node's clock with the database's at every heartbeat (clock-skew.ts). */
  clock?: ClockWatch;
}

export function leaseLoop(deps: LeaseLoopDeps): Loop {
  return new Loop({
    name: "lease",
    intervalMs: deps.node.leaseMs / 3,
    onError: deps.onError,
    tick: async () => {
      const started = performance.now();
      const count = await deps.leases.renew();
      await heartbeat(deps);
      deps.events.emit("loop:tick", { loop: "lease", durationMs: performance.now() - started, count });
    },
  });
}

/**
 * Upserts this node's row; on the lease connection, since the pool may be busy
 * with steps for longer than a lease. Its reply carries the database's clock,
 * which `clock` compares with the node's.
 */
export async function heartbeat({
  leases,
  flow,
  node,
  clock,
}: Pick<LeaseLoopDeps, "leases" | "flow" | "node" | "clock">): Promise<void> {
  const before = Date.now();
  // On the lease connection: Leases runs a statement there like a pool would.
  const { rows } = await flow.heartbeat(leases, node);
  const after = Date.now();
  if (rows[0]) clock?.observe(Number(rows[0].database_ms), before, after);
}
