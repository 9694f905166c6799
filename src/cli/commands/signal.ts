import { EXIT_OK, UsageError, type Command } from "../cli.js";
import { CLIENT_OPTIONS, printJson, targetFrom, unknownHint, withClient } from "../client.js";
import { UnknownInstanceError } from "../../errors.js";
import { TARGET_OPTIONS } from "./show.js";

export const signalCommand: Command = {
  name: "signal",
  summary: "send a signal (event and JSON payload) to an instance, by id or correlation key",
  description: [
    "Sends <event> to an instance (engine.signal): committed before the command",
    "exits, delivered at least once, kept in the mailbox until an await consumes it.",
    "The target is an id when it is a number, otherwise a correlation key; --id or",
    "--key force the reading. With --keep, a signal to a correlation key that has",
    "no live instance waits (signalRetention) for the instance inserted with it.",
    "A payload starting with a dash needs the = form: --payload=-1.",
  ].join("\n"),
  positionals: [
    { name: "target", description: "instance id or correlation key" },
    { name: "event", description: "the event name the instance awaits" },
  ],
  options: {
    payload: { type: "string", valueName: "json", description: "the payload, as JSON (default null)" },
    "dedup-key": {
      type: "string",
      valueName: "key",
      description: "a second signal with this key to the same instance is stored once",
    },
    keep: {
      type: "boolean",
      description: "no live instance with the key: keep the signal for the next one (ifMissing: keep)",
    },
    ...TARGET_OPTIONS,
    ...CLIENT_OPTIONS,
  },
  async run(values, io, [text, event]) {
    const target = targetFrom(text!, values, this);
    if (values.keep && "id" in target)
      throw new UsageError(
        "--keep applies to a correlation key, not an id (an id that does not exist never will)",
        this,
      );
    const payload = payloadFrom(values.payload, this);
    const dedupKey = typeof values["dedup-key"] === "string" ? values["dedup-key"] : undefined;
    return withClient(this, values, io, async ({ engine, json }) => {
      let result;
      try {
        result = await engine.signal("id" in target ? { id: target.id } : target.correlationKey, event!, payload, {
          ...(dedupKey !== undefined ? { dedupKey } : {}),
          ...(values.keep ? { ifMissing: "keep" as const } : {}),
        });
      } catch (error) {
        if (error instanceof UnknownInstanceError) {
          const hint =
            "id" in target
              ? unknownHint(target)
              : " (pass --keep to hold the signal until an instance with this key is inserted)";
          throw new UnknownInstanceError(
            `${"id" in target ? target.id : JSON.stringify(target.correlationKey)}${hint}`,
          );
        }
        throw error;
      }
      if (json) {
        printJson(io, result);
        return EXIT_OK;
      }
      if (result.duplicate)
        io.out(
          `duplicate: a signal with dedup key ${JSON.stringify(dedupKey)} was already sent to instance ` +
            `${result.instanceId ?? "(inbox)"}; stored once`,
        );
      else if (result.instanceId === null)
        io.out(
          `signal ${result.signalId} kept for correlation key ` +
            `${JSON.stringify("correlationKey" in target ? target.correlationKey : "")} ` +
            "until an instance with it is inserted",
        );
      else io.out(`signal ${result.signalId} (${event}) sent to instance ${result.instanceId}`);
      return EXIT_OK;
    });
  },
};

function payloadFrom(text: unknown, command: Command): unknown {
  if (typeof text !== "string") return null;
  try {
    return JSON.parse(text);
  } catch (error) {
    throw new UsageError(
      `--payload is not valid JSON (${error instanceof Error ? error.message : String(error)}); ` +
        `quote strings, e.g. --payload '"text"' or --payload '{"amount":100}'`,
      command,
    );
  }
}
