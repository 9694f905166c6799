import { EXIT_OK, UsageError, type Command } from "../cli.js";
import { applyToFilter, FILTER_OPTIONS, filterFrom } from "../bulk.js";
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
    const filter = filterFrom(values, this, LIVE, LIVE);
    if (filter && text !== undefined) throw new UsageError("pass an instance id or a filter, not both", this);
    if (!filter && text === undefined)
      throw new UsageError("pass an instance id, or a filter (--machine, --status, --queue, --older-than)", this);
    if (filter) {
      return withClient(this, values, io, ({ engine, pool, schema, json }) =>
        applyToFilter(
          io,
          pool,
          schema,
          filter,
          { verb: "cancel", past: "cancelled", dryRun: values["dry-run"] === true, json },
          (id) => engine.cancel(id, reason),
        ),
      );
    }
    const id = idFrom(text!, this);
    return withClient(this, values, io, async ({ engine, json }) => {
      await engine.cancel(id, reason);
      if (json) printJson(io, { id, status: "cancelled", reason: reason ?? "cancelled" });
      else io.out(`instance ${id} is cancelled`);
      return EXIT_OK;
    });
  },
};
