import type { Instance, Transition } from "../../instance.js";
import { UnknownInstanceError } from "../../errors.js";
import { EXIT_OK, type Command } from "../cli.js";
import {
  CLIENT_OPTIONS,
  CommandFailure,
  describeTarget,
  printJson,
  targetFrom,
  unknownHint,
  withClient,
} from "../client.js";
import { duration, fields, table, timestamp, truncate } from "../table.js";

/** Transitions printed as text (all of them with --json); a retried poison pill can have thousands. */
const HISTORY_LINES = 50;

export const TARGET_OPTIONS = {
  id: { type: "boolean", description: "read the target as an instance id" },
  key: { type: "boolean", description: "read the target as a correlation key (even if it looks like a number)" },
} as const;

export const showCommand: Command = {
  name: "show",
  summary: "one instance: its fields, state, history and why it is not running",
  description: [
    "Shows an instance (engine.get), every committed transition (engine.history)",
    "and why it is not running right now (engine.explain). The target is an id when",
    "it is a number, otherwise a correlation key (the live instance with that key,",
    "else the newest); --id or --key force the reading.",
  ].join("\n"),
  positionals: [{ name: "target", description: "instance id or correlation key" }],
  options: { ...TARGET_OPTIONS, ...CLIENT_OPTIONS },
  async run(values, io, [text]) {
    const target = targetFrom(text!, values, this);
    return withClient(this, values, io, async ({ engine, json }) => {
      const instance = await engine.get("id" in target ? target.id : target);
      if (!instance) throw new CommandFailure(`no instance ${describeTarget(target)}${unknownHint(target)}`);
      const history = await engine.history(instance.id);
      let explanation;
      try {
        explanation = await engine.explain(instance.id);
      } catch (error) {
        // Pruned between get and explain: show what was read.
        if (!(error instanceof UnknownInstanceError)) throw error;
      }
      if (json) {
        printJson(io, { instance, history, explanation: explanation ?? null });
        return EXIT_OK;
      }
      for (const line of describeInstance(instance)) io.out(line);
      io.out("");
      io.out(`history (${history.length} transition${history.length === 1 ? "" : "s"}, oldest first):`);
      for (const line of historyTable(history)) io.out(`  ${line}`);
      if (explanation) {
        io.out("");
        io.out("why it is not running:");
        for (const reason of explanation.reasons) io.out(`  - ${reason}`);
      }
      return EXIT_OK;
    });
  },
};

function describeInstance(i: Instance): string[] {
  const lines = fields([
    ["id", i.id],
    ["machine", i.machine],
    ["status", i.status],
    ["step", i.step],
    ["attempt", String(i.attempt)],
    ["queue", i.queue],
    ["priority", String(i.priority)],
    ["run at", timestamp(i.runAt)],
    ["correlation key", i.correlationKey ?? "-"],
    ["concurrency key", i.concurrencyKey ?? "-"],
    ["parent", i.parentId ?? "-"],
    ["inserted", timestamp(i.insertedAt)],
    ["updated", timestamp(i.updatedAt)],
  ]);
  lines.push("state:", ...indent(JSON.stringify(i.state, null, 2)));
  if (i.result !== null && i.result !== undefined) lines.push("result:", ...indent(JSON.stringify(i.result, null, 2)));
  if (i.error) lines.push("error:", ...indent(`${i.error.name}: ${i.error.message}`));
  if (Object.keys(i.published ?? {}).length > 0)
    lines.push("published:", ...indent(JSON.stringify(i.published, null, 2)));
  return lines;
}

function historyTable(history: Transition[]): string[] {
  if (history.length === 0) return ["(none)"];
  const shown = history.length > HISTORY_LINES ? history.slice(-HISTORY_LINES) : history;
  const lines = table(
    [
      { header: "AT" },
      { header: "FROM" },
      { header: "TO" },
      { header: "OUTCOME" },
      { header: "ATTEMPT", align: "right" },
      { header: "DURATION", align: "right" },
      { header: "ERROR" },
    ],
    shown.map((t) => [
      timestamp(t.at),
      t.fromStep ?? "-",
      t.toStep ?? "-",
      t.outcome,
      String(t.attempt),
      t.durationMs === null ? "-" : duration(t.durationMs),
      t.error
        ? truncate(`${t.error.name}: ${t.error.message}`, 80)
        : t.published
          ? truncate(`published ${Object.keys(t.published).join(", ")}`, 80)
          : "",
    ]),
  );
  if (shown.length < history.length)
    lines.splice(1, 0, `... ${history.length - shown.length} earlier transitions (all of them with --json)`);
  return lines;
}

function indent(text: string): string[] {
  return text.split("\n").map((line) => `  ${line}`);
}
