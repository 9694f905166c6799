/**
 * `cron`: the cron entries the engines run, as the nodes recorded them when their cron loop
 * started (the CLI has no engine options), with each entry's latest tick, the instance that tick
 * inserted, and its next tick computed from the schedule on the database clock.
 */
import { Cron } from "croner";
import { cronQueries } from "../../sql/cron.js";
import { EXIT_OK, type Command } from "../cli.js";
import { CLIENT_OPTIONS, printJson, withClient } from "../client.js";
import { table, timestamp } from "../table.js";

/** The first tick of `schedule` after `afterMs`, or null (never again, or a schedule this version cannot read). */
export function nextTick(schedule: string, timezone: string, afterMs: number): Date | null {
  try {
    return new Cron(schedule, { paused: true, timezone, mode: "5-or-6-parts" }).nextRun(new Date(afterMs));
  } catch {
    return null;
  }
}

export const cronCommand: Command = {
  name: "cron",
  summary: "the cron entries: schedule, machine, last tick and its instance, next tick",
  description: [
    "Lists the cron entries as the engines that run them recorded them when they started,",
    "with the latest tick that fired, the instance it inserted (and that instance's status,",
    "or - once pruned) and the next tick, computed from the schedule on the database clock.",
    "An entry that only left ticks (its engines have not started since this version) shows",
    "no schedule.",
  ].join("\n"),
  options: CLIENT_OPTIONS,
  async run(values, io) {
    return withClient(this, values, io, async ({ pool, schema, json }) => {
      const { rows } = await cronQueries(schema).entries(pool);
      const entries = rows.map((r) => ({
        name: r.name,
        schedule: r.schedule,
        timezone: r.timezone,
        machine: r.machine,
        queue: r.queue,
        missed: r.missed,
        recordedAt: r.recordedAt,
        lastTick: r.lastTick,
        lastInstance: r.lastInstance,
        lastStatus: r.lastStatus,
        nextTick: r.schedule && r.timezone ? nextTick(r.schedule, r.timezone, r.now) : null,
      }));
      if (json) {
        printJson(io, { entries });
        return EXIT_OK;
      }
      if (entries.length === 0) {
        io.out("no cron entries recorded (an engine records its cron entries when it starts)");
        return EXIT_OK;
      }
      for (const line of table(
        [
          { header: "NAME" },
          { header: "SCHEDULE" },
          { header: "MACHINE" },
          { header: "LAST TICK" },
          { header: "LAST INSTANCE" },
          { header: "NEXT TICK" },
        ],
        entries.map((e) => [
          e.name,
          e.schedule ? `${e.schedule} (${e.timezone})` : "-",
          e.machine ?? "-",
          e.lastTick ? timestamp(e.lastTick) : "never",
          e.lastInstance ? `${e.lastInstance} (${e.lastStatus ?? "pruned"})` : "-",
          e.nextTick ? timestamp(e.nextTick) : "-",
        ]),
      ))
        io.out(line);
      return EXIT_OK;
    });
  },
};
