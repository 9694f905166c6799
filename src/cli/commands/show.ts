import type { GenDurable } from "../../engine.js";
import type { Instance, Transition } from "../../instance.js";
import { cliQueries, type ShownChildRow, type ShownSignalRow } from "../../sql/cli.js";
import { isTerminal } from "../../status.js";
import { UnknownInstanceError } from "../../errors.js";
import { EXIT_OK, type Command, type Io } from "../cli.js";
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
  options: {
    ...TARGET_OPTIONS,
    follow: {
      type: "boolean",
      short: "f",
      description: "then print each new transition as it commits, until the instance is terminal (or Ctrl-C)",
    },
    ...CLIENT_OPTIONS,
  },
  async run(values, io, [text]) {
    const target = targetFrom(text!, values, this);
    return withClient(this, values, io, async ({ engine, pool, schema, json }) => {
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
      const q = cliQueries(schema);
      const { rows: signals } = await q.signals(pool, { id: instance.id, limit: SHOWN });
      const { rows: children } = await q.children(pool, { id: instance.id, limit: SHOWN });
      if (json) {
        printJson(io, { instance, history, signals, children, explanation: explanation ?? null });
        if (values.follow) await follow(engine, instance, history, io, true);
        return EXIT_OK;
      }
      for (const line of describeInstance(instance)) io.out(line);
      if (signals.length > 0) {
        io.out("");
        io.out(`signals (${signals.length}${signals.length === SHOWN ? "+" : ""}, oldest first):`);
        for (const line of signalTable(signals)) io.out(`  ${line}`);
      }
      if (children.length > 0) {
        io.out("");
        io.out(`children (${children.length}${children.length === SHOWN ? "+" : ""}, oldest first):`);
        for (const line of childTable(children)) io.out(`  ${line}`);
      }
      io.out("");
      io.out(`history (${history.length} transition${history.length === 1 ? "" : "s"}, oldest first):`);
      for (const line of historyTable(history)) io.out(`  ${line}`);
      if (explanation) {
        io.out("");
        io.out("why it is not running:");
        for (const reason of explanation.reasons) io.out(`  - ${reason}`);
      }
      if (values.follow) await follow(engine, instance, history, io, false);
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

/**
 * The step a row moved from, as an operator reads it. An await parks the instance with its next
 * step already recorded (the row's `step` is the step to resume at), so the resume and timeout
 * rows store that step as their `from`, which reads as if it had run: shown instead is the step
 * that parked, from the await row before them.
 */
export function displayedFrom(history: readonly Transition[]): Array<string | null> {
  let parked: string | null = null;
  return history.map((t) => {
    if (t.outcome === "await") parked = t.fromStep;
    if ((t.outcome === "resumed" || t.outcome === "timeout") && parked !== null) return parked;
    return t.fromStep;
  });
}

function historyRows(history: readonly Transition[], from: ReadonlyArray<string | null>): string[][] {
  return history.map((t, i) => [
    timestamp(t.at),
    from[i] ?? "-",
    t.toStep ?? "-",
    t.outcome,
    String(t.attempt),
    t.durationMs === null ? "-" : duration(t.durationMs),
    t.error
      ? truncate(`${t.error.name}: ${t.error.message}`, 80)
      : t.published
        ? truncate(`published ${Object.keys(t.published).join(", ")}`, 80)
        : "",
  ]);
}

function historyTable(history: Transition[]): string[] {
  if (history.length === 0) return ["(none)"];
  const from = displayedFrom(history);
  const first = Math.max(0, history.length - HISTORY_LINES);
  const shown = history.slice(first);
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
    historyRows(shown, from.slice(first)),
  );
  if (shown.length < history.length)
    lines.splice(1, 0, `... ${history.length - shown.length} earlier transitions (all of them with --json)`);
  return lines;
}

function indent(text: string): string[] {
  return text.split("\n").map((line) => `  ${line}`);
}

/** Signals and children shown at most. */
const SHOWN = 50;

function signalTable(signals: ShownSignalRow[]): string[] {
  return table(
    [{ header: "ID" }, { header: "EVENT" }, { header: "SENT" }, { header: "CONSUMED" }, { header: "PAYLOAD" }],
    signals.map((s) => [
      s.id,
      s.event,
      timestamp(s.insertedAt),
      s.consumedAt ? timestamp(s.consumedAt) : "(waiting in the mailbox)",
      truncate(JSON.stringify(s.payload), 80),
    ]),
  );
}

function childTable(children: ShownChildRow[]): string[] {
  return table(
    [{ header: "ID" }, { header: "MACHINE" }, { header: "STATUS" }, { header: "STEP" }, { header: "RESULT / ERROR" }],
    children.map((c) => [
      c.id,
      c.machine,
      c.status,
      c.step,
      c.error
        ? truncate(`${c.error.name}: ${c.error.message}`, 60)
        : c.result === null || c.result === undefined
          ? ""
          : truncate(JSON.stringify(c.result), 60),
    ]),
  );
}

/** How often --follow reads the history. */
const FOLLOW_POLL_MS = 500;

/**
 * --follow: prints each transition committed after `seen` (one JSON line each with --json)
 * until the instance is terminal, or Ctrl-C (SIGINT), or it is pruned.
 */
async function follow(
  engine: GenDurable,
  instance: Instance,
  seen: Transition[],
  io: Io,
  json: boolean,
): Promise<void> {
  let count = seen.length;
  let history = seen;
  let status = instance.status;
  let interrupted = false;
  let wake: () => void = () => {};
  const onSigint = () => {
    interrupted = true;
    wake();
  };
  process.once("SIGINT", onSigint);
  try {
    if (!json && !isTerminal(status)) {
      io.out("");
      io.out("following (Ctrl-C to stop):");
    }
    while (!isTerminal(status) && !interrupted) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, FOLLOW_POLL_MS).unref();
      });
      if (interrupted) break;
      const current = await engine.get(instance.id);
      if (!current) break;
      status = current.status;
      history = await engine.history(instance.id);
      const from = displayedFrom(history);
      for (let i = count; i < history.length; i++) {
        const t = history[i]!;
        if (json) io.out(JSON.stringify({ transition: { ...t, fromStep: from[i] ?? null } }));
        else {
          const [at, f, to, outcome, attempt, took, error] = historyRows([t], [from[i] ?? null])[0]!;
          io.out(`  ${at}  ${f} -> ${to}  ${outcome}  attempt ${attempt}  ${took}${error ? `  ${error}` : ""}`);
        }
      }
      count = history.length;
    }
    if (!json && isTerminal(status)) io.out(`instance ${instance.id} is ${status}`);
    if (json && isTerminal(status)) io.out(JSON.stringify({ status }));
  } finally {
    process.removeListener("SIGINT", onSigint);
  }
}
