/** Await specs: which signals satisfy an await, decided over the mailbox in arrival order. */
import { describe } from "../duration.js";
import { ValidationError } from "../errors.js";
import { checkName } from "../names.js";
import type { AwaitSpec } from "../outcome.js";
import { matchTree, normalizeTree, partialTree, type SpecNode } from "./composite-spec.js";

/** The stored form of an await spec. */
export interface NormalizedSpec {
  /** "tree": a composite spec (sets or alternatives of packs and other sets), in `tree`. */
  mode: "one" | "all" | "any" | "pack" | "tree";
  /** Every event the spec names: the mailbox is read for these only. */
  events: string[];
  count: number;
  tree?: SpecNode;
  /** Step to run when the await times out (set by the executor when a timeout is given). */
  onTimeout?: string;
}

export function normalizeSpec(spec: AwaitSpec, where: string): NormalizedSpec {
  const bad = (m: string) => new ValidationError(`${where}: ${m}`);
  // The rule engine.signal applies to the event it sends: a name it refuses could never satisfy the await.
  const event = (e: unknown) => checkName(e, "event names", bad);
  if (typeof spec === "string") return { mode: "one", events: [event(spec)], count: 1 };
  if (typeof spec === "object" && spec !== null) {
    if ("all" in spec || "any" in spec) {
      const mode = "all" in spec ? "all" : "any";
      const list = (spec as { all?: unknown; any?: unknown })[mode];
      if (!Array.isArray(list) || list.length === 0)
        throw bad(`{ ${mode}: [...] } needs a non-empty array of event names or await specs`);
      // Composite: an element is itself a spec (a pack, a set): kept as a tree, matched by composite-spec.ts.
      if (list.some((e) => typeof e === "object" && e !== null)) {
        const tree = normalizeTree(spec, bad);
        return { mode: "tree", events: treeEvents(tree), count: 0, tree };
      }
      const events = [...new Set(list.map(event))];
      return { mode, events, count: mode === "all" ? events.length : 1 };
    }
    if ("event" in spec) {
      const count = (spec as { count?: unknown }).count;
      if (typeof count !== "number" || !Number.isInteger(count) || count < 1 || count > 100_000) {
        throw bad(`a pack { event, count } needs an integer count from 1 to 100000, got ${describe(count)}`);
      }
      return { mode: "pack", events: [event(spec.event)], count };
    }
  }
  throw bad(`an await spec is "event", { all: [...] }, { any: [...] } or { event, count }; got ${describe(spec)}`);
}

function treeEvents(node: SpecNode, into = new Set<string>()): string[] {
  if ("event" in node) into.add(node.event);
  else for (const child of node.all ?? node.any ?? []) treeEvents(child, into);
  return [...into];
}

/** Picks the signals that satisfy `spec` from `mailbox` (oldest first), or null when it is not satisfied yet. */
export function matchSpec<S extends { event: string }>(spec: NormalizedSpec, mailbox: readonly S[]): S[] | null {
  const relevant = mailbox.filter((s) => spec.events.includes(s.event));
  switch (spec.mode) {
    case "tree":
      return matchTree(spec.tree!, relevant);
    case "one":
    case "any":
      return relevant.length > 0 ? [relevant[0]!] : null;
    case "pack":
      return relevant.length >= spec.count ? relevant.slice(0, spec.count) : null;
    case "all": {
      const firsts = spec.events.map((e) => relevant.find((s) => s.event === e));
      if (firsts.some((s) => s === undefined)) return null;
      return relevant.filter((s) => firsts.includes(s));
    }
  }
}

/** On timeout: the signals that count toward `spec` so far (none of them satisfied it). */
export function partialMatch<S extends { event: string }>(spec: NormalizedSpec, mailbox: readonly S[]): S[] {
  const relevant = mailbox.filter((s) => spec.events.includes(s.event));
  switch (spec.mode) {
    case "tree":
      return partialTree(spec.tree!, relevant);
    case "one":
    case "any":
      return relevant.slice(0, 1);
    case "pack":
      return relevant.slice(0, spec.count);
    case "all": {
      const firsts = new Set(
        spec.events.map((e) => relevant.find((s) => s.event === e)).filter((s) => s !== undefined),
      );
      return relevant.filter((s) => firsts.has(s));
    }
  }
}
