/**
 * Composite await specs: `{ any: [{ event: "approve", count: 2 }, "reject"] }`,
 * sets and alternatives nested to any depth, with packs as leaves. Matched over
 * the mailbox in arrival order, like the flat specs (await-spec.ts): of the
 * alternatives of an `any`, the one completed first (by arrival) wins, and the
 * signals consumed are the oldest of each event the winning branches need. An event named in two branches of a
 * set counts toward each in turn (two leaves of "a" in an `all` need two "a").
 */
import { describe } from "../duration.js";
import { checkName } from "../names.js";

export type SpecNode =
  { event: string; count: number } | { all: SpecNode[]; any?: never } | { any: SpecNode[]; all?: never };

/** Bounds a composite spec, which is stored in the row and walked on every signal. */
const MAX_LEAVES = 100;
const MAX_DEPTH = 8;
const MAX_COUNT = 100_000;

export function normalizeTree(spec: unknown, bad: (message: string) => Error): SpecNode {
  let leaves = 0;
  const walk = (node: unknown, depth: number): SpecNode => {
    if (depth > MAX_DEPTH) throw bad(`a composite await spec nests at most ${MAX_DEPTH} levels`);
    if (typeof node === "string") node = { event: node, count: 1 };
    if (typeof node !== "object" || node === null) {
      throw bad(`an await spec is "event", { all: [...] }, { any: [...] } or { event, count }; got ${describe(node)}`);
    }
    if ("event" in node) {
      if (++leaves > MAX_LEAVES) throw bad(`a composite await spec names at most ${MAX_LEAVES} events or packs`);
      const count = (node as { count?: unknown }).count ?? 1;
      if (typeof count !== "number" || !Number.isInteger(count) || count < 1 || count > MAX_COUNT) {
        throw bad(`a pack { event, count } needs an integer count from 1 to ${MAX_COUNT}, got ${describe(count)}`);
      }
      return { event: checkName((node as { event: unknown }).event, "event names", bad), count };
    }
    const mode = "all" in node ? "all" : "any" in node ? "any" : undefined;
    const list = mode && (node as Record<string, unknown>)[mode];
    if (!mode || !Array.isArray(list) || list.length === 0) {
      throw bad(`{ all: [...] } and { any: [...] } need a non-empty array of event names or await specs`);
    }
    const children = list.map((child: unknown) => walk(child, depth + 1));
    return mode === "all" ? { all: children } : { any: children };
  };
  return walk(spec, 1);
}

/** The signals that satisfy `tree`, oldest first, or null when the mailbox does not satisfy it yet. */
export function matchTree<S extends { event: string }>(tree: SpecNode, relevant: readonly S[]): S[] | null {
  const used = need(
    tree,
    relevant.map((_, i) => i),
    relevant,
  );
  return used ? used.picked.sort((a, b) => a - b).map((i) => relevant[i]!) : null;
}

/** On timeout: the signals that count toward `tree` so far, up to what its leaves could use of each event. */
export function partialTree<S extends { event: string }>(tree: SpecNode, relevant: readonly S[]): S[] {
  const wanted = new Map<string, number>();
  const walk = (node: SpecNode): void => {
    if ("event" in node) wanted.set(node.event, (wanted.get(node.event) ?? 0) + node.count);
    else for (const child of node.all ?? node.any) walk(child);
  };
  walk(tree);
  return takeOldest(relevant, wanted);
}

/**
 * What the tree consumes of `available` (mailbox positions, in arrival order) when satisfied, and the
 * position at which it became satisfied; null when it is not. An alternative takes the branch
 * satisfied earliest; a set takes its members in turn, each from what the previous ones left.
 */
function need(
  node: SpecNode,
  available: readonly number[],
  mailbox: readonly { event: string }[],
): { picked: number[]; at: number } | null {
  if ("event" in node) {
    const picked = available.filter((i) => mailbox[i]!.event === node.event).slice(0, node.count);
    return picked.length === node.count ? { picked, at: picked[picked.length - 1]! } : null;
  }
  if (node.any) {
    let best: { picked: number[]; at: number } | null = null;
    for (const child of node.any) {
      const used = need(child, available, mailbox);
      if (used && (best === null || used.at < best.at)) best = used;
    }
    return best;
  }
  let left = available;
  const total = { picked: [] as number[], at: -1 };
  for (const child of node.all) {
    const used = need(child, left, mailbox);
    if (!used) return null;
    const taken = new Set(used.picked);
    left = left.filter((i) => !taken.has(i));
    total.picked.push(...used.picked);
    total.at = Math.max(total.at, used.at);
  }
  return total;
}

function takeOldest<S extends { event: string }>(signals: readonly S[], counts: ReadonlyMap<string, number>): S[] {
  const left = new Map(counts);
  return signals.filter((s) => {
    const n = left.get(s.event) ?? 0;
    if (n <= 0) return false;
    left.set(s.event, n - 1);
    return true;
  });
}

/** The spec in words, for explain: `any of (2 × "approve", "reject")`. */
export function describeTree(node: SpecNode): string {
  if ("event" in node) return node.count === 1 ? `"${node.event}"` : `${node.count} × "${node.event}"`;
  const mode = node.all ? "all" : "any";
  return `${mode} of (${(node.all ?? node.any).map(describeTree).join(", ")})`;
}
