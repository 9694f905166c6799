import { EXIT_OK, UsageError, type Command } from "../cli.js";
import { CLIENT_OPTIONS, printJson, withClient } from "../client.js";
import { loadMachines, MACHINES_OPTION } from "./versions.js";
import { dashboardQueries } from "../../sql/dashboard.js";
import { buildGraph, toMermaid, toSvg } from "../../dashboard/graph.js";
import { WINDOWS } from "../../dashboard/pages.js";

export const graphCommand: Command = {
  name: "graph",
  summary: "a machine's graph from its recorded transitions, as Mermaid (or SVG)",
  description: [
    "Prints the steps of <machine> and the transitions recorded between them over the",
    "window (default 7d): count, median duration and failure rate per edge; await and",
    "timeout edges dotted, spawn edges thick. Paste the Mermaid into any Markdown that",
    "renders it, or pass --format svg for an image laid out like the dashboard's.",
    "With --machines <module>, prints instead the static graph of the definition that module",
    "exports (Machine.toMermaid: its steps and the targets they declare with `to`), or with",
    "--json Machine.graph(); no database is needed.",
  ].join("\n"),
  positionals: [{ name: "machine", description: "the machine's name" }],
  options: {
    window: { type: "string", valueName: "w", description: `${Object.keys(WINDOWS).join(", ")} (default 7d)` },
    format: { type: "string", valueName: "f", description: "mermaid (default) or svg" },
    step: { type: "string", valueName: "name", description: "highlight this step" },
    machines: MACHINES_OPTION,
    json: { type: "boolean", description: "with --machines: print Machine.graph() as JSON" },
    schema: CLIENT_OPTIONS.schema,
    "database-url": CLIENT_OPTIONS["database-url"],
  },
  async run(values, io, [machine]) {
    if (typeof values.machines === "string") {
      const definition = (await loadMachines(values.machines, this)).get(machine!);
      if (!definition) throw new UsageError(`--machines ${values.machines} exports no machine ${machine}`, this);
      if (values.json === true) printJson(io, definition.graph());
      else io.out(definition.toMermaid());
      return EXIT_OK;
    }
    if (values.json === true) throw new UsageError("--json needs --machines <module>", this);
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
      const { rows } = await dashboardQueries(schema).edges(pool, { machine: machine!, windowS: seconds });
      const graph = buildGraph(machine!, rows, step === undefined ? [] : [step]);
      if (rows.length === 0)
        io.err(`gen-durable graph: no transition of machine ${machine} recorded in the last ${windowName}`);
      io.out((format === "svg" ? toSvg(graph, step) : toMermaid(graph, step)).trimEnd());
      return EXIT_OK;
    });
  },
};
