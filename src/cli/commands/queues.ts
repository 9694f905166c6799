/** `pause` and `resume`: stop and restart claiming in queues, on every node (engine.pauseQueue / resumeQueue). */
import { EXIT_OK, type Command } from "../cli.js";
import { CLIENT_OPTIONS, printJson, withClient } from "../client.js";

function queueCommand(paused: boolean): Command {
  const name = paused ? "pause" : "resume";
  return {
    name,
    summary: paused
      ? "pause queues: no node claims in them until resume (running steps finish)"
      : "resume paused queues and wake every node",
    description: paused
      ? [
          "Stops every node from claiming in each queue (engine.pauseQueue); steps already",
          "running finish, and inserts and signals are still accepted. Takes effect at each",
          "node's next claim. Prints the paused queues afterwards.",
        ].join("\n")
      : [
          "Lets every node claim in each queue again (engine.resumeQueue) and wakes them",
          "through NOTIFY. Resuming a queue that is not paused does nothing. Prints the",
          "paused queues afterwards.",
        ].join("\n"),
    positionals: [{ name: "queue", description: "one or more queue names", variadic: true }],
    options: CLIENT_OPTIONS,
    async run(values, io, queues) {
      return withClient(this, values, io, async ({ engine, json }) => {
        for (const queue of queues) {
          if (paused) await engine.pauseQueue(queue);
          else await engine.resumeQueue(queue);
        }
        const now = await engine.pausedQueues();
        if (json) printJson(io, { [paused ? "paused" : "resumed"]: queues, pausedQueues: now });
        else {
          io.out(`${paused ? "paused" : "resumed"}: ${queues.join(", ")}`);
          io.out(`paused queues now: ${now.length ? now.join(", ") : "(none)"}`);
        }
        return EXIT_OK;
      });
    },
  };
}

export const pauseCommand = queueCommand(true);
export const resumeCommand = queueCommand(false);
