import { EXIT_OK, type Command } from "../cli.js";
import { CLIENT_OPTIONS, idFrom, printJson, withClient } from "../client.js";

export const retryCommand: Command = {
  name: "retry",
  summary: "run a failed instance's failed step again, with fresh attempts",
  description: [
    "Makes a failed instance runnable at its failed step, attempts reset (engine.retry).",
    "Only failed instances can be retried: any other status fails (exit 1).",
  ].join("\n"),
  positionals: [{ name: "id", description: "the instance id" }],
  options: CLIENT_OPTIONS,
  async run(values, io, [text]) {
    const id = idFrom(text!, this);
    return withClient(this, values, io, async ({ engine, json }) => {
      await engine.retry(id);
      if (json) printJson(io, { id, status: "runnable" });
      else io.out(`instance ${id} is runnable again`);
      return EXIT_OK;
    });
  },
};
