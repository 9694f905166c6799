import { EXIT_OK, type Command } from "../cli.js";
import { CLIENT_OPTIONS, idFrom, printJson, withClient } from "../client.js";

export const cancelCommand: Command = {
  name: "cancel",
  summary: "cancel an instance and its live descendants (terminal, no retry)",
  description: [
    "Makes the instance terminal `cancelled` with its live children (engine.cancel).",
    "A step running now is aborted and its outcome discarded. Cancelling a cancelled",
    "instance succeeds; cancelling a done or failed one fails (exit 1).",
  ].join("\n"),
  positionals: [{ name: "id", description: "the instance id" }],
  options: {
    reason: {
      type: "string",
      valueName: "text",
      description: 'recorded as the instance\'s error message (default "cancelled")',
    },
    ...CLIENT_OPTIONS,
  },
  async run(values, io, [text]) {
    const id = idFrom(text!, this);
    const reason = typeof values.reason === "string" ? values.reason : undefined;
    return withClient(this, values, io, async ({ engine, json }) => {
      await engine.cancel(id, reason);
      if (json) printJson(io, { id, status: "cancelled", reason: reason ?? "cancelled" });
      else io.out(`instance ${id} is cancelled`);
      return EXIT_OK;
    });
  },
};
