import { EXIT_OK, type Command } from "../cli.js";
import { FILTER_OPTIONS, runOnFilter } from "../bulk.js";
import { CLIENT_OPTIONS, idFrom, printJson, withClient } from "../client.js";

const LIVE = ["runnable", "running", "awaiting", "joining"] as const;

export const cancelCommand: Command = {
  name: "cancel",
  summary: "cancel instances and their live descendants (one id, or a filter)",
  description: [
    "Makes the instance terminal `cancelled` with its live children (engine.cancel).",
    "A step running now is aborted and its outcome discarded. Cancelling a cancelled",
    "instance succeeds; cancelling a done or failed one fails (exit 1).",
    "Without an id, cancels every live instance the filter selects (--machine, --queue,",
    "--older-than, --status among runnable, running, awaiting, joining; default all four),",
    "one by one as engine.cancel would. --dry-run prints how many match.",
  ].join("\n"),
  positionals: [{ name: "id", description: "the instance id (or a filter instead)", optional: true }],
  options: {
    reason: {
      type: "string",
      valueName: "text",
      description: 'recorded as the instance\'s error message (default "cancelled")',
    },
    ...FILTER_OPTIONS,
    ...CLIENT_OPTIONS,
  },
  async run(values, io, [text]) {
    const reason = typeof values.reason === "string" ? values.reason : undefined;
    const hint = "--machine, --status, --queue, --older-than";
    const spec = { statuses: LIVE, defaults: LIVE, verb: "cancel", past: "cancelled", hint };
    const bulk = runOnFilter(this, values, io, text, spec, (engine, id) => engine.cancel(id, reason));
    if (bulk) return bulk;
    const id = idFrom(text!, this);
    return withClient(this, values, io, async ({ engine, json }) => {
      await engine.cancel(id, reason);
      if (json) printJson(io, { id, status: "cancelled", reason: reason ?? "cancelled" });
      else io.out(`instance ${id} is cancelled`);
      return EXIT_OK;
    });
  },
};
