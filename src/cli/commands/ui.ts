import { createServer } from "node:http";
import { isIP } from "node:net";
import { EXIT_OK, UsageError, type Command } from "../cli.js";
import { withClient } from "../client.js";
import { DATABASE_URL_OPTION, databaseUrlFrom, SCHEMA_OPTION } from "../db.js";
import { createDashboard } from "../../dashboard/index.js";

const DEFAULT_PORT = 4680;

export const uiCommand: Command = {
  name: "ui",
  summary: "serve the web dashboard (queues, instances, machine graphs, actions) on 127.0.0.1",
  description: [
    "Serves the dashboard until interrupted (Ctrl-C). It reads the database directly:",
    "no engine needs to run here. Binds 127.0.0.1 unless --host says otherwise; bound",
    "to any other address it needs --token (or GEN_DURABLE_UI_TOKEN), which the browser",
    "asks for as the password, unless --read-only. --read-only hides every action.",
  ].join("\n"),
  options: {
    port: { type: "string", valueName: "n", description: `the port (default ${DEFAULT_PORT}; 0 picks a free one)` },
    host: { type: "string", valueName: "address", description: "the address to bind (default 127.0.0.1)" },
    "read-only": { type: "boolean", description: "no action: hide them and refuse every POST" },
    token: {
      type: "string",
      valueName: "secret",
      description: "require this secret (HTTP Basic password); default GEN_DURABLE_UI_TOKEN",
    },
    "base-path": {
      type: "string",
      valueName: "path",
      description: "serve under this path, e.g. /durable (behind a proxy)",
    },
    schema: SCHEMA_OPTION,
    "database-url": DATABASE_URL_OPTION,
  },
  async run(values, io) {
    const port = portFrom(values.port, this);
    const host = typeof values.host === "string" ? values.host : "127.0.0.1";
    const readOnly = values["read-only"] === true;
    const token = typeof values.token === "string" ? values.token : io.env.GEN_DURABLE_UI_TOKEN || undefined;
    if (token !== undefined && token.length < 8) throw new UsageError("--token must be at least 8 characters", this);
    if (!isLoopback(host) && token === undefined && !readOnly)
      throw new UsageError(
        `refusing to serve actions on ${host} without a token: ` +
          "pass --token (or set GEN_DURABLE_UI_TOKEN), or --read-only, or bind 127.0.0.1",
        this,
      );
    const basePath = typeof values["base-path"] === "string" ? values["base-path"] : undefined;
    // withClient checks the schema is migrated first; the dashboard then opens its own small pool.
    return withClient(this, values, io, async ({ schema }) => {
      const connectionString = databaseUrlFrom(values, io, this);
      const dashboard = createDashboard({ connectionString, schema, readOnly, basePath, token });
      const server = createServer(dashboard);
      await new Promise<void>((resolve, reject) => {
        server.once("error", reject);
        server.listen(port, host, () => resolve());
      });
      const address = server.address();
      const bound = typeof address === "object" && address ? address.port : port;
      const shown = host.includes(":") ? `[${host}]` : host;
      io.out(
        `gen-durable dashboard on http://${shown}:${bound}${dashboard.basePath}/ ` +
          `(schema ${schema}${readOnly ? ", read-only" : ""}${token ? ", token required" : ""}); Ctrl-C stops it`,
      );
      await new Promise<void>((resolve) => {
        process.once("SIGINT", resolve);
        process.once("SIGTERM", resolve);
      });
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await dashboard.close();
      return EXIT_OK;
    });
  },
};

function isLoopback(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  return host === "::1";
}

function portFrom(value: unknown, command: Command): number {
  if (value === undefined) return DEFAULT_PORT;
  const n = Number(value);
  if (typeof value !== "string" || !/^\d+$/.test(value) || n > 65535)
    throw new UsageError(`--port must be an integer from 0 to 65535, got ${JSON.stringify(value)}`, command);
  return n;
}
