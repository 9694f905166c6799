/**
 * Join conditions of ctx.spawn: when the join step runs. Stored with the
 * parent (instances.join_rule) and applied by the join sweep (sql/children.ts),
 * which counts each finished child once, under the parent's row lock, so the
 * condition turns true exactly once whatever the order children finish in.
 */
import { describe } from "../duration.js";
import { ValidationError } from "../errors.js";
import type { SpawnOptions } from "../outcome.js";
import { rejectUnknownKeys } from "../suggest.js";

/**
 * `need`: children that must end `done` (first: 1, quorum: n); the join also runs once that is out of
 * reach. `failFast`: the first child that ends failed or cancelled. `total`: the spawn's children.
 * `keep`: children still live when it runs are left running.
 */
export interface JoinRule {
  total: number;
  need?: number;
  failFast?: true;
  keep?: true;
}

/** The stored rule of a spawn's options, or null for "every child" (the join as it always was). */
export function joinRule(options: SpawnOptions | undefined, total: number, where: string): JoinRule | null {
  if (options === undefined) return null;
  const bad = (m: string) => new ValidationError(`${where}: ${m}`);
  if (typeof options !== "object" || options === null) {
    throw bad(`options must be an object { join?, remaining? }, got ${describe(options)}`);
  }
  rejectUnknownKeys(options, ["join", "remaining"], `${where} options`, (m) => new ValidationError(m));
  const { join = "all", remaining = "cancel" } = options;
  if (remaining !== "cancel" && remaining !== "keep") {
    throw bad(`remaining must be "cancel" or "keep", got ${describe(remaining)}`);
  }
  const keep = remaining === "keep" ? { keep: true as const } : {};
  if (join === "all") return null;
  if (join === "first") return { total, need: 1, ...keep };
  if (typeof join === "object" && join !== null && "quorum" in join) {
    const n = join.quorum;
    if (!Number.isInteger(n) || n < 1 || n > Math.max(total, 1)) {
      throw bad(`join { quorum } must be an integer from 1 to the number of children (${total}), got ${describe(n)}`);
    }
    return { total, need: n, ...keep };
  }
  if (typeof join === "object" && join !== null && "failFast" in join && join.failFast === true) {
    return { total, failFast: true, ...keep };
  }
  throw bad(`join must be "all", "first", { quorum: n } or { failFast: true }, got ${describe(join)}`);
}
