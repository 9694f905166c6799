/** engine.explain(): why an instance is not running right now, in words and as data. */
import type pg from "pg";
import type { Instance } from "../instance.js";
import { explainQueries, type ExplainRow } from "../sql/explain.js";
import { describeTree } from "./composite-spec.js";
import { childQueries } from "../sql/children.js";

/** What `engine.explain(id)` says: why the instance is not running right now, in sentences and as data. */
export interface Explanation {
  /** The instance's id. */
  id: string;
  /** Its status when explained. */
  status: string;
  /** One sentence per reason. */
  reasons: string[];
  /** The facts behind the reasons. */
  details: Record<string, unknown>;
}

/** What explain needs to know of the node asking: whether it runs queues, and which machines. */
export interface ExplainingNode {
  queues: ReadonlyMap<string, unknown>;
  machines: ReadonlyMap<string, unknown>;
}

export async function explainInstance(
  pool: pg.Pool,
  node: ExplainingNode,
  instance: Instance,
  schema: string,
): Promise<Explanation> {
  const q = explainQueries(schema);
  const reasons: string[] = [];
  const details: Record<string, unknown> = {};
  const { rows } = await q.facts(pool, { id: instance.id });
  const row = rows[0];
  const now = row?.now ?? new Date();
  details.databaseTime = now;
  switch (instance.status) {
    case "runnable":
      if (row?.rate_limited && instance.runAt > now) {
        reasons.push(
          `rate limit "${row.rate_limited}" was short: it waits in line for tokens until ` +
            instance.runAt.toISOString(),
        );
        details.rateLimitedUntil = instance.runAt;
        details.rateLimit = row.rate_limited;
      } else if (instance.runAt > now) {
        reasons.push(
          `due at ${instance.runAt.toISOString()} ` +
            `(in ${Math.ceil((instance.runAt.getTime() - now.getTime()) / 1000)} s)`,
        );
        details.dueAt = instance.runAt;
      } else {
        reasons.push(
          `due since ${instance.runAt.toISOString()}; it runs when a node running queue "${instance.queue}" ` +
            `with machine "${instance.machine}" has a free slot`,
        );
      }
      if (row?.paused) {
        reasons.push(`queue "${instance.queue}" is paused`);
        details.queuePaused = instance.queue;
      }
      explainKey(instance, row, reasons, details);
      if (row && row.nodes === 0) {
        reasons.push(`no started node runs machine "${instance.machine}" on queue "${instance.queue}"`);
        details.noNode = { machine: instance.machine, queue: instance.queue };
      }
      if (instance.error) reasons.push(`its last attempt failed: ${instance.error.message}`);
      if (node.queues.size > 0 && !node.machines.has(instance.machine)) {
        reasons.push(`this node does not run machine "${instance.machine}"`);
      }
      break;
    case "running":
      reasons.push(
        `it is running step "${instance.step}" (attempt ${instance.attempt}) on node ${row?.leased_by ?? "?"}, ` +
          `lease until ${row?.lease_expires_at?.toISOString() ?? "?"}`,
      );
      details.node = row?.leased_by;
      details.leaseExpiresAt = row?.lease_expires_at;
      break;
    case "awaiting": {
      const spec = row?.await_spec;
      if (spec) {
        const arrived = await q.arrived(pool, { id: instance.id, events: spec.events });
        const counts = Object.fromEntries(arrived.rows.map((r) => [r.event, r.n]));
        const wanted =
          spec.mode === "tree"
            ? describeTree(spec.tree!)
            : spec.mode === "pack"
              ? `${spec.count} × "${spec.events[0]}"`
              : spec.mode === "one"
                ? `"${spec.events[0]}"`
                : `${spec.mode} of ${spec.events.map((e) => `"${e}"`).join(", ")}`;
        reasons.push(
          `awaiting signals: ${wanted}; arrived so far: ` +
            (arrived.rows.length ? arrived.rows.map((r) => `${r.n} × "${r.event}"`).join(", ") : "none"),
        );
        details.awaiting = spec;
        details.arrived = counts;
        if (spec.onTimeout) {
          reasons.push(`times out at ${instance.runAt.toISOString()}, then runs step "${spec.onTimeout}"`);
          details.timeoutAt = instance.runAt;
        }
      }
      break;
    }
    case "joining": {
      const { rows: progress } = await childQueries(schema).progress(pool, { parentId: instance.id });
      const { total, live, join_rule: rule } = progress[0]!;
      const when = !rule
        ? "all have finished"
        : rule.failFast
          ? "one has failed or all are done"
          : `${rule.need} ${rule.need === 1 ? "is" : "are"} done (or that is out of reach)`;
      reasons.push(`joining: ${live} of ${total} children still live; step "${instance.step}" runs when ${when}`);
      details.children = { total, live, finished: total - live };
      break;
    }
    default:
      reasons.push(`it is ${instance.status} (terminal) since ${instance.updatedAt.toISOString()}`);
  }
  return { id: instance.id, status: instance.status, reasons, details };
}

/** Why a key keeps a runnable instance waiting: its holder (limit 1), or all its holders (limit N). */
function explainKey(
  instance: { id: string; concurrencyKey: string | null },
  row: ExplainRow | undefined,
  reasons: string[],
  details: Record<string, unknown>,
): void {
  const holders = row?.key_holders?.filter((id) => id !== instance.id) ?? [];
  if (holders.length === 1 && row?.key_limit === 1) {
    reasons.push(`concurrency key "${instance.concurrencyKey}" is held by instance ${holders[0]}`);
    details.concurrencyKey = { key: instance.concurrencyKey, heldBy: holders[0] };
  } else if (holders.length > 0) {
    reasons.push(
      `concurrency key "${instance.concurrencyKey}" is at its limit of ${row!.key_limit} steps at once, ` +
        `held by instances ${holders.join(", ")}`,
    );
    details.concurrencyKey = { key: instance.concurrencyKey, heldBy: holders[0], heldByAll: holders };
  }
}
