import type { Instance } from "../../instance.js";
import { STATUSES, type Status } from "../../status.js";
import { didYouMean } from "../../suggest.js";
import { EXIT_OK, UsageError, type Command } from "../cli.js";
import { CLIENT_OPTIONS, idFrom, printJson, withClient } from "../client.js";
import { table, timestamp, truncate } from "../table.js";

const DEFAULT_LIMIT = 50;
const MAX_LIMIT = 10_000;

export const listCommand: Command = {
  name: "list",
  summary: "list instances, newest first, filtered by machine, status, queue or key",
  description: [
    "Lists instances newest first (engine.list). Filters combine with AND. Page",
    "with --after: the last line says which id to pass for the next page.",
  ].join("\n"),
  options: {
    machine: { type: "string", valueName: "name", description: "only instances of this machine" },
    status: { type: "string", valueName: "s[,s]", description: `only these statuses: ${STATUSES.join(", ")}` },
    queue: { type: "string", valueName: "name", description: "only instances in this queue" },
    key: { type: "string", valueName: "key", description: "only instances with this correlation key" },
    limit: {
      type: "string",
      valueName: "n",
      description: `at most n instances, 1 to ${MAX_LIMIT} (default ${DEFAULT_LIMIT})`,
    },
    after: { type: "string", valueName: "id", description: "the page after this id (instances older than it)" },
    ...CLIENT_OPTIONS,
  },
  async run(values, io) {
    const filter = {
      ...(typeof values.machine === "string" ? { machine: values.machine } : {}),
      ...(typeof values.status === "string" ? { status: statusesFrom(values.status, this) } : {}),
      ...(typeof values.queue === "string" ? { queue: values.queue } : {}),
      ...(typeof values.key === "string" ? { correlationKey: values.key } : {}),
      limit: limitFrom(values.limit, this),
      ...(typeof values.after === "string" ? { after: idFrom(values.after, this, "--after") } : {}),
    };
    return withClient(this, values, io, async ({ engine, json }) => {
      const instances = await engine.list(filter);
      // A full page may have a next one; a short page is the last.
      const nextAfter = instances.length === filter.limit ? instances[instances.length - 1]!.id : null;
      if (json) {
        printJson(io, { instances, nextAfter });
        return EXIT_OK;
      }
      if (instances.length === 0) {
        io.out("no instances match");
        return EXIT_OK;
      }
      for (const line of table(
        [
          { header: "ID", align: "right" },
          { header: "MACHINE" },
          { header: "STATUS" },
          { header: "STEP" },
          { header: "QUEUE" },
          { header: "ATTEMPT", align: "right" },
          { header: "RUN AT" },
          { header: "KEY" },
          { header: "UPDATED" },
        ],
        instances.map(row),
      )) {
        io.out(line);
      }
      io.out("");
      io.out(
        `${instances.length} instance${instances.length === 1 ? "" : "s"}` +
          `${nextAfter ? `; next page: --after ${nextAfter}` : ""}`,
      );
      return EXIT_OK;
    });
  },
};

function row(i: Instance): string[] {
  return [
    i.id,
    i.machine,
    i.status,
    i.step,
    i.queue,
    String(i.attempt),
    timestamp(i.runAt),
    i.correlationKey === null ? "-" : truncate(i.correlationKey, 40),
    timestamp(i.updatedAt),
  ];
}

function statusesFrom(text: string, command: Command): Status[] {
  const parts = text.split(",").map((s) => s.trim());
  for (const part of parts) {
    if (!(STATUSES as readonly string[]).includes(part)) {
      throw new UsageError(
        `unknown status ${JSON.stringify(part)} in --status${didYouMean(part, STATUSES)}; ` +
          `statuses are ${STATUSES.join(", ")}`,
        command,
      );
    }
  }
  return parts as Status[];
}

function limitFrom(value: unknown, command: Command): number {
  if (value === undefined) return DEFAULT_LIMIT;
  const n = Number(value);
  if (typeof value !== "string" || !/^\d+$/.test(value) || n < 1 || n > MAX_LIMIT) {
    throw new UsageError(`--limit must be an integer from 1 to ${MAX_LIMIT}, got ${JSON.stringify(value)}`, command);
  }
  return n;
}
