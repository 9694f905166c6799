import { EXIT_OK, UsageError, type Command } from "../cli.js";
import { CLIENT_OPTIONS, withClient } from "../client.js";
import { dashboardQueries } from "../../dashboard/queries.js";
import { buildGraph, toMermaid, toSvg, type EdgeRow } from "../../dashboard/graph.js";
import { WINDOWS } from "../../dashboard/pages.js";

export const graphCommand: Command = {
  name: "graph",
  summary: "a machine's graph from its recorded transitions, as Mermaid (or SVG)",
  description: [
    "Prints the steps of <machine> and the transitions recorded between them over the",
    "window (default 7d): count, median duration and failure rate per edge; await and",
    "timeout edges dotted, spawn edges thick. Paste the Mermaid into any Markdown that",
    "renders it, or pass --format svg for an image laid out like the dashboard's.",
  ].join("\n"),
  positionals: [{ name: "machine", description: "the machine's name" }],
  options: {
    window: { type: "string", valueName: "w", description: `${Object.keys(WINDOWS).join(", ")} (default 7d)` },
    format: { type: "string", valueName: "f", description: "mermaid (default) or svg" },
    step: { type: "string", valueName: "name", description: "highlight this step" },
    schema: CLIENT_OPTIONS.schema,
    "database-url": CLIENT_OPTIONS["database-url"],
  },
  async run(values, io, [machine]) {
    const windowName = typeof values.window === "string" ? values.window : "7d";
    const seconds = WINDOWS[windowName];
    if (seconds === undefined)
      throw new UsageError(
        `--window must be one of ${Object.keys(WINDOWS).join(", ")}, got ${JSON.stringify(windowName)}`,
        this,
      );
    const format = typeof values.format === "string" ? values.format : "mermaid";
    if (format !== "mermaid" && format !== "svg")
      throw new UsageError(`--format must be mermaid or svg, got ${JSON.stringify(format)}`, this);
    const step = typeof values.step === "string" ? values.step : undefined;
    return withClient(this, values, io, async ({ pool, schema }) => {
      const { rows } = await pool.query<EdgeRow>(dashboardQueries(schema).edges, [machine, seconds]);
      const graph = buildGraph(machine!, rows, step === undefined ? [] : [step]);
      if (rows.length === 0)
        io.err(`gen-durable graph: no transition of machine ${machine} recorded in the last ${windowName}`);
      io.out((format === "svg" ? toSvg(graph, step) : toMermaid(graph, step)).trimEnd());
      return EXIT_OK;
    });
  },
};
