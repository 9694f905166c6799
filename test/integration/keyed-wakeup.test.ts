// The next instance of a concurrency key runs as soon as the previous one's outcome commits,
// without waiting for the poll: the claim made when a step's code settles still finds the key held.
import { expect, it } from "vitest";
import { z } from "zod";
import { defineJob } from "../../src/index.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const Keyed = defineJob({
  name: "Keyed",
  queue: "keyed",
  args: z.object({ n: z.number() }),
  perform: async (args) => args.n,
});
// Polls every 10 minutes: whatever runs sooner was woken.
const runner = db.engine({ queues: { keyed: 4 }, machines: [Keyed], pollInterval: "10m" });
await runner.start();

it("runs a key's queued instances one after another without the poll", async () => {
  const ids: string[] = [];
  for (let n = 0; n < 4; n++) ids.push((await runner.insert(Keyed, { args: { n }, concurrencyKey: "account:1" })).id);
  for (const id of ids) expect((await runner.wait(id, { timeout: 10_000 })).status).toBe("done");
});
