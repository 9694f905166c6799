import { parseDuration } from "../../duration.js";
import { GenDurable } from "../../engine.js";
import { GenDurableError } from "../../errors.js";
import { checkName } from "../../names.js";
import { EXIT_FAILURE, EXIT_OK, UsageError, type Command } from "../cli.js";
import {
  DATABASE_URL_OPTION,
  databaseUrlFrom,
  describeDbError,
  openCliPool,
  redact,
  SCHEMA_OPTION,
  schemaFrom,
  urlProblem,
} from "../db.js";

/** Instances per engine.prune call; a progress line follows each call that had more to do. */
export const PROGRESS_EVERY = 10_000;

export const pruneCommand: Command = {
  name: "prune",
  summary: "delete terminal instances past their retention, with their history and signals",
  description: [
    "Deletes done, failed and cancelled instances that finished more than --older-than",
    "ago (database clock), with their history and signals, in batches of 1,000 per",
    "short transaction; also drops inbox signals past signalRetention. Without",
    "--older-than each machine keeps its own retention (defineMachine({ retention }),",
    "recorded by the engines that define it), else 7 days. Safe while engines run",
    "and while other pruners run: live instances, and finished children their live",
    "parent still needs, are never deleted. A long run prints its progress on stderr",
    `every ${PROGRESS_EVERY.toLocaleString("en-US")} instances.`,
  ].join("\n"),
  options: {
    "older-than": {
      type: "string",
      valueName: "duration",
      description:
        "prune instances finished longer ago than this, e.g. 7d, 12h, 30m " +
        '(default: each machine\'s retention, else "7d")',
    },
    machine: { type: "string", valueName: "name", description: "only instances of this machine" },
    json: { type: "boolean", description: "print the counts as JSON" },
    schema: SCHEMA_OPTION,
    "database-url": DATABASE_URL_OPTION,
  },
  async run(values, io) {
    const schema = schemaFrom(values, this);
    let olderThan: number | undefined;
    if (values["older-than"] !== undefined) {
      const parsed = parseDuration(values["older-than"], "--older-than");
      if (typeof parsed === "string") throw new UsageError(parsed, this);
      olderThan = parsed;
    }
    const machine =
      values.machine === undefined ? undefined : checkName(values.machine, "--machine", (m) => new UsageError(m, this));
    const url = databaseUrlFrom(values, io, this);
    const problem = urlProblem(url);
    if (problem) {
      io.err(`gen-durable prune: ${problem}`);
      return EXIT_FAILURE;
    }
    const pool = openCliPool(url);
    // A pure client engine (no queues: no loops), so the CLI prunes exactly as engine.prune() does.
    const engine = new GenDurable({ pool, schema });
    try {
      await engine.start();
      const result = { instances: 0, transitions: 0, signals: 0 };
      // In chunks, with a progress line on stderr after each one that left more to do: a prune
      // of millions of rows takes minutes, and a silent terminal reads as a hung one.
      for (;;) {
        const part = await engine.prune({
          ...(olderThan === undefined ? {} : { olderThan }),
          ...(machine === undefined ? {} : { machine }),
          limit: PROGRESS_EVERY,
        });
        result.instances += part.instances;
        result.transitions += part.transitions;
        result.signals += part.signals;
        if (part.instances < PROGRESS_EVERY) break;
        io.err(
          `gen-durable prune: ${result.instances} instances pruned so far (${result.transitions} history rows, ` +
            `${result.signals} signals); continuing`,
        );
      }
      if (values.json) {
        io.out(JSON.stringify({ schema, ...result }));
      } else {
        io.out(
          `pruned ${result.instances} ${result.instances === 1 ? "instance" : "instances"}, ` +
            `${result.transitions} history ${result.transitions === 1 ? "row" : "rows"} and ` +
            `${result.signals} ${result.signals === 1 ? "signal" : "signals"} from schema ${schema}`,
        );
      }
      return EXIT_OK;
    } catch (error) {
      const reason = error instanceof GenDurableError ? error.message : describeDbError(error);
      io.err(`gen-durable prune: could not prune schema ${schema} at ${redact(url)}: ${reason}`);
      return EXIT_FAILURE;
    } finally {
      await engine.stop().catch(() => {});
      await pool.end().catch(() => {});
    }
  },
};
