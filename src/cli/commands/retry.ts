import { EXIT_OK, type Command } from "../cli.js";
import { FILTER_OPTIONS, runOnFilter } from "../bulk.js";
import type { Status } from "../../status.js";

const FAILED: readonly Status[] = ["failed"];
import { CLIENT_OPTIONS, idFrom, printJson, withClient } from "../client.js";

export const retryCommand: Command = {
  name: "retry",
  summary: "run failed instances' failed step again, with fresh attempts (one id, or a filter)",
  description: [
    "Makes a failed instance runnable at its failed step, attempts reset (engine.retry).",
    "Only failed instances can be retried: any other status fails (exit 1).",
    "Without an id, retries every failed instance the filter selects (--machine, --queue,",
    "--older-than; --status may only be failed), one by one as engine.retry would; one that",
    "cannot be retried is skipped with its reason. --dry-run prints how many match.",
  ].join("\n"),
  positionals: [{ name: "id", description: "the instance id (or a filter instead)", optional: true }],
  options: { ...FILTER_OPTIONS, ...CLIENT_OPTIONS },
  async run(values, io, [text]) {
    const spec = {
      statuses: FAILED,
      defaults: FAILED,
      verb: "retry",
      past: "retried",
      hint: "--machine, --queue, --older-than",
    };
    const bulk = runOnFilter(this, values, io, text, spec, (engine, id) => engine.retry(id));
    if (bulk) return bulk;
    const id = idFrom(text!, this);
    return withClient(this, values, io, async ({ engine, json }) => {
      await engine.retry(id);
      if (json) printJson(io, { id, status: "runnable" });
      else io.out(`instance ${id} is runnable again`);
      return EXIT_OK;
    });
  },
};
