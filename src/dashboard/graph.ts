/**
 * A machine's graph as recorded: steps as nodes, transitions as edges, with the
 * count, median duration and failure rate of each edge. Laid out by dagre (a
 * layered layout, the kind state machines read best in) and drawn as a
 * standalone SVG, or written as a Mermaid flowchart.
 */
import dagre from "@dagrejs/dagre";
import type { EdgeRow } from "../sql/dashboard.js";
import { esc } from "./html.js";

/** How an edge is drawn: what moved the instance along it. */
export type EdgeKind = "next" | "await" | "timeout" | "spawn" | "retry" | "snooze" | "done" | "failed" | "cancelled";

export interface GraphEdge {
  from: string;
  to: string;
  kind: EdgeKind;
  count: number;
  p50Ms: number | null;
  /** Share of the transitions out of `from` that failed an attempt or the instance (0..1). */
  failureRate: number;
}

export interface MachineGraph {
  machine: string;
  steps: string[];
  /** Steps some recorded transition left or reached; the others come from the definition only. */
  recorded: Set<string>;
  /** The definition's initial step, when the definition was given. */
  initial?: string;
  /** Pseudo-nodes for terminal outcomes ("done", "failed", "cancelled") that were reached. */
  ends: string[];
  edges: GraphEdge[];
}

const END_PREFIX = "\u0000end:";
/** Terminal outcomes end in a pseudo-node named after them; no step name can hold NUL. */
export const endNode = (outcome: string) => `${END_PREFIX}${outcome}`;
const isEnd = (node: string) => node.startsWith(END_PREFIX);
const nodeLabel = (node: string) => (isEnd(node) ? node.slice(END_PREFIX.length) : node);

function kindOf(outcome: string): EdgeKind | null {
  switch (outcome) {
    case "next":
    case "joined":
    case "rejoin":
      return "next";
    case "await":
      return "await";
    case "timeout":
      return "timeout";
    case "spawn":
      return "spawn";
    case "error":
    case "lease_expired":
    case "retried":
      return "retry";
    case "snooze":
      return "snooze";
    case "done":
    case "failed":
    case "cancelled":
      return outcome;
    default:
      // "resumed" leaves the instance at the step it awaited at: the await edge already drew that move.
      return null;
  }
}

/**
 * Folds the recorded rows into edges. `extraSteps` (the current step, the steps a definition
 * declares) are nodes even if nothing was recorded for them; `initial` marks the entry step.
 */
export function buildGraph(
  machine: string,
  rows: readonly EdgeRow[],
  extraSteps: readonly string[] = [],
  initial?: string,
): MachineGraph {
  const steps = new Set<string>(extraSteps);
  const recorded = new Set<string>();
  const ends = new Set<string>();
  const outOf = new Map<string, { total: number; failures: number }>();
  const merged = new Map<string, GraphEdge & { weighted: number; timed: number }>();
  for (const row of rows) {
    if (row.from_step === null) continue;
    steps.add(row.from_step);
    recorded.add(row.from_step);
    if (row.to_step !== null) recorded.add(row.to_step);
    const out = outOf.get(row.from_step) ?? { total: 0, failures: 0 };
    out.total += row.n;
    if (row.outcome === "error" || row.outcome === "failed" || row.outcome === "lease_expired") out.failures += row.n;
    outOf.set(row.from_step, out);
    const kind = kindOf(row.outcome);
    if (kind === null) continue;
    let to: string;
    if (kind === "done" || kind === "failed" || kind === "cancelled") {
      to = endNode(kind);
      ends.add(kind);
    } else {
      to = row.to_step ?? row.from_step;
      steps.add(to);
    }
    const key = JSON.stringify([row.from_step, to, kind]);
    const edge = merged.get(key) ?? {
      from: row.from_step,
      to,
      kind,
      count: 0,
      p50Ms: null,
      failureRate: 0,
      weighted: 0,
      timed: 0,
    };
    edge.count += row.n;
    // Rows of one edge (e.g. error and lease_expired) merge: their medians weighted by count approximate the median.
    if (row.p50_ms !== null) {
      edge.weighted += row.p50_ms * row.n;
      edge.timed += row.n;
    }
    merged.set(key, edge);
  }
  const edges = [...merged.values()].map(({ weighted, timed, ...edge }) => {
    const out = outOf.get(edge.from)!;
    return {
      ...edge,
      p50Ms: timed > 0 ? Math.round(weighted / timed) : null,
      failureRate: out.total > 0 ? out.failures / out.total : 0,
    };
  });
  if (initial !== undefined) steps.add(initial);
  return {
    machine,
    steps: [...steps].sort(),
    recorded,
    ...(initial !== undefined ? { initial } : {}),
    ends: [...ends].sort(),
    edges,
  };
}

export function formatMs(ms: number | null): string {
  if (ms === null) return "";
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  if (ms < 3_600_000) return `${(ms / 60_000).toFixed(1)} min`;
  return `${(ms / 3_600_000).toFixed(1)} h`;
}

export function edgeLabel(edge: GraphEdge): string {
  const parts = [edge.kind === "next" ? "" : edge.kind, `${edge.count}×`];
  if (edge.p50Ms !== null) parts.push(`p50 ${formatMs(edge.p50Ms)}`);
  // The share of the step's attempts that failed belongs on the edges failures take, not on every edge out of it.
  if ((edge.kind === "retry" || edge.kind === "failed") && edge.failureRate > 0)
    parts.push(`${Math.round(edge.failureRate * 100)}% of attempts`);
  return parts.filter(Boolean).join(" · ");
}

/** A Mermaid flowchart of the graph (paste into any Markdown that renders Mermaid). */
export function toMermaid(graph: MachineGraph, current?: string): string {
  const ids = new Map<string, string>();
  const id = (node: string) => {
    let found = ids.get(node);
    if (!found) ids.set(node, (found = `s${ids.size}`));
    return found;
  };
  // Mermaid has no escape for a quote inside a quoted label but its entity code.
  const quote = (text: string) => `"${text.replace(/"/g, "#quot;").replace(/[\r\n]+/g, " ")}"`;
  const lines = ["flowchart LR"];
  for (const step of graph.steps) lines.push(`  ${id(step)}[${quote(step)}]`);
  for (const end of graph.ends) lines.push(`  ${id(endNode(end))}((${quote(end)}))`);
  for (const edge of graph.edges) {
    const arrow = edge.kind === "await" || edge.kind === "timeout" ? "-.->" : edge.kind === "spawn" ? "==>" : "-->";
    lines.push(`  ${id(edge.from)} ${arrow}|${quote(edgeLabel(edge))}| ${id(edge.to)}`);
  }
  lines.push("  classDef current fill:#fde68a,stroke:#b45309,stroke-width:3px");
  lines.push("  classDef failed fill:#fee2e2,stroke:#b91c1c");
  lines.push("  classDef unrecorded stroke-dasharray:4 3");
  const unrecorded = graph.steps.filter((step) => !graph.recorded.has(step));
  if (unrecorded.length > 0) lines.push(`  class ${unrecorded.map(id).join(",")} unrecorded`);
  if (current !== undefined && graph.steps.includes(current)) lines.push(`  class ${id(current)} current`);
  if (graph.ends.includes("failed")) lines.push(`  class ${id(endNode("failed"))} failed`);
  return lines.join("\n") + "\n";
}

const CHAR_WIDTH = 7.2;
/** The width of an edge label at 10px, estimated (the server has no font metrics). */
const labelWidth = (text: string) => text.length * 5.6 + 8;
const NODE_HEIGHT = 34;

const EDGE_COLORS: Record<EdgeKind, string> = {
  next: "#475569",
  await: "#2563eb",
  timeout: "#d97706",
  spawn: "#7c3aed",
  retry: "#dc2626",
  snooze: "#64748b",
  done: "#15803d",
  failed: "#b91c1c",
  cancelled: "#6b7280",
};

/**
 * The graph as a standalone SVG document fragment (styles inline, so the exported
 * file renders anywhere). `current` is highlighted. Every name is escaped.
 */
export function toSvg(graph: MachineGraph, current?: string): string {
  const g = new dagre.graphlib.Graph({ multigraph: true });
  g.setGraph({ rankdir: "LR", nodesep: 50, ranksep: 80, edgesep: 15, marginx: 12, marginy: 44 });
  const nodes = [...graph.steps, ...graph.ends.map(endNode)];
  for (const node of nodes) {
    const label = nodeLabel(node);
    const width = isEnd(node) ? Math.max(56, label.length * CHAR_WIDTH + 20) : label.length * CHAR_WIDTH + 28;
    g.setNode(node, { width, height: NODE_HEIGHT });
  }
  // Self-loops (retries, snoozes, a resumed await) are drawn by hand above their node: dagre routes them
  // through a dummy beside it, where they collide with the labels of edges in the same rank.
  const loops: GraphEdge[] = [];
  graph.edges.forEach((edge, i) => {
    if (edge.from === edge.to) {
      loops.push(edge);
      return;
    }
    const label = edgeLabel(edge);
    g.setEdge(
      edge.from,
      edge.to,
      { width: labelWidth(label) + 4, height: 14, labelpos: "c", index: i },
      `${edge.kind}:${i}`,
    );
  });
  dagre.layout(g);
  const { width = 100, height = 60 } = g.graph();
  const parts: string[] = [];
  parts.push(
    `<svg xmlns="http://www.w3.org/2000/svg" class="machine-graph" ` +
      `width="${Math.ceil(width)}" height="${Math.ceil(height)}" ` +
      `viewBox="0 0 ${Math.ceil(width)} ${Math.ceil(height)}" ` +
      `role="img" aria-label="${esc(`graph of machine ${graph.machine}`)}">`,
    `<style>.machine-graph text{font:12px system-ui,sans-serif;fill:#0f172a}` +
      `.machine-graph .edge-label{font-size:10px;fill:#334155;paint-order:stroke;stroke:#fff;stroke-width:4px;` +
      `stroke-linejoin:round}` +
      `.machine-graph .step rect{fill:#f8fafc;stroke:#64748b;stroke-width:1.2}` +
      `.machine-graph .step.unrecorded rect{fill:#fff;stroke-dasharray:4 3}` +
      `.machine-graph .step.initial rect{stroke-width:2.5}` +
      `.machine-graph .step.current rect{fill:#fde68a;stroke:#b45309;stroke-width:3}` +
      `.machine-graph .end circle,.machine-graph .end rect{fill:#f1f5f9;stroke:#94a3b8}</style>`,
    `<defs>${Object.entries(EDGE_COLORS)
      .map(
        ([kind, color]) =>
          `<marker id="arrow-${kind}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" ` +
          `orient="auto-start-reverse"><path d="M0,0L10,5L0,10z" fill="${color}"/></marker>`,
      )
      .join("")}</defs>`,
  );
  for (const e of g.edges()) {
    const label = g.edge(e) as { points: Array<{ x: number; y: number }>; x?: number; y?: number; index: number };
    const edge = graph.edges[label.index]!;
    const color = EDGE_COLORS[edge.kind];
    const dash = edge.kind === "await" || edge.kind === "timeout" ? ` stroke-dasharray="6 4"` : "";
    const widthAttr = edge.kind === "spawn" ? 2.5 : 1.5;
    const d = pathThrough(label.points);
    parts.push(
      `<g class="edge edge-${edge.kind}" data-from="${esc(edge.from)}" data-to="${esc(nodeLabel(edge.to))}">` +
        `<title>${esc(`${edge.from} → ${nodeLabel(edge.to)}: ${edgeLabel(edge)}`)}</title>` +
        `<path d="${d}" fill="none" stroke="${color}" stroke-width="${widthAttr}"${dash} ` +
        `marker-end="url(#arrow-${edge.kind})"/>` +
        (label.x !== undefined && label.y !== undefined
          ? // dagre routes the edge through its label's box: a white box under the text keeps it legible.
            `<rect class="edge-label-box" x="${(label.x - labelWidth(edgeLabel(edge)) / 2).toFixed(1)}" ` +
            `y="${(label.y - 7).toFixed(1)}" width="${labelWidth(edgeLabel(edge)).toFixed(1)}" height="14" rx="3" ` +
            `fill="#fff" fill-opacity="0.9"/>` +
            `<text class="edge-label" x="${label.x.toFixed(1)}" y="${(label.y + 3.5).toFixed(1)}" ` +
            `text-anchor="middle">${esc(edgeLabel(edge))}</text>`
          : "") +
        `</g>`,
    );
  }
  const stacked = new Map<string, number>();
  for (const edge of loops) {
    const { x, y, height: h } = g.node(edge.from);
    const top = y - h / 2;
    // A second loop on one node (retry and snooze, say) goes around the first.
    const k = stacked.get(edge.from) ?? 0;
    stacked.set(edge.from, k + 1);
    const rise = 32 + k * 22;
    const color = EDGE_COLORS[edge.kind];
    const f = (n: number) => n.toFixed(1);
    parts.push(
      `<g class="edge edge-${edge.kind}" data-from="${esc(edge.from)}" data-to="${esc(edge.from)}">` +
        `<title>${esc(`${edge.from} → ${edge.from}: ${edgeLabel(edge)}`)}</title>` +
        `<path d="M${f(x - 12)},${f(top)}C${f(x - 30 - k * 8)},${f(top - rise)} ` +
        `${f(x + 30 + k * 8)},${f(top - rise)} ${f(x + 12)},${f(top)}" ` +
        `fill="none" stroke="${color}" stroke-width="1.5" marker-end="url(#arrow-${edge.kind})"/>` +
        `<text class="edge-label" x="${f(x)}" y="${f(top - rise + 4)}" text-anchor="middle">` +
        `${esc(edgeLabel(edge))}</text></g>`,
    );
  }
  for (const node of nodes) {
    const { x, y, width: w, height: h } = g.node(node);
    const label = nodeLabel(node);
    if (isEnd(node)) {
      parts.push(
        `<g class="end end-${esc(label)}">` +
          `<rect x="${(x - w / 2).toFixed(1)}" y="${(y - h / 2).toFixed(1)}" width="${w.toFixed(1)}" height="${h}" ` +
          `rx="${h / 2}"/>` +
          `<text x="${x.toFixed(1)}" y="${(y + 4).toFixed(1)}" text-anchor="middle">${esc(label)}</text></g>`,
      );
    } else {
      const cls = [
        "step",
        node === graph.initial ? "initial" : "",
        graph.recorded.has(node) ? "" : "unrecorded",
        node === current ? "current" : "",
      ]
        .filter(Boolean)
        .join(" ");
      parts.push(
        `<g class="${cls}" data-step="${esc(label)}"${node === current ? ` aria-current="step"` : ""}>` +
          `<rect x="${(x - w / 2).toFixed(1)}" y="${(y - h / 2).toFixed(1)}" width="${w.toFixed(1)}" height="${h}" ` +
          `rx="6"/>` +
          `<text x="${x.toFixed(1)}" y="${(y + 4).toFixed(1)}" text-anchor="middle">${esc(label)}</text></g>`,
      );
    }
  }
  parts.push("</svg>");
  return parts.join("\n");
}

/** A smooth path through dagre's points (quadratic curves through the midpoints). */
function pathThrough(points: Array<{ x: number; y: number }>): string {
  const f = (n: number) => n.toFixed(1);
  if (points.length === 0) return "";
  let d = `M${f(points[0]!.x)},${f(points[0]!.y)}`;
  if (points.length === 2) return `${d}L${f(points[1]!.x)},${f(points[1]!.y)}`;
  for (let i = 1; i < points.length - 1; i++) {
    const p = points[i]!;
    const next = points[i + 1]!;
    const mid = i === points.length - 2 ? next : { x: (p.x + next.x) / 2, y: (p.y + next.y) / 2 };
    d += `Q${f(p.x)},${f(p.y)} ${f(mid.x)},${f(mid.y)}`;
  }
  return d;
}
