// Cancelling an instance aborts its running step through ctx.abortSignal, but code that ignores
// the abort runs on. Its concurrency key must stay held until that code has settled (or, if it
// never does, until its lease expires): the key's next instance must not run beside it.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const gates = new Map<string, () => void>();
const log: string[] = [];
const Stubborn = defineJob({
  name: "Stubborn",
  queue: "stubborn",
  args: z.object({ name: z.string(), hang: z.enum(["gate", "forever", "no"]) }),
  perform: async (args) => {
    log.push(`${args.name} start`);
    // Ignores ctx.abortSignal on purpose.
    if (args.hang === "gate") await new Promise<void>((resolve) => gates.set(args.name, resolve));
    if (args.hang === "forever") await new Promise(() => {});
    log.push(`${args.name} end`);
    return null;
  },
});

const client = db.engine();
await client.start();

async function claimsWhile(engine: ReturnType<typeof db.engine>, count: number): Promise<void> {
  let claims = 0;
  const off = engine.on("loop:tick", (e) => {
    if (e.loop === "scheduler") claims++;
  });
  try {
    await eventually(`${count} claims`, () => claims >= count);
  } finally {
    off();
  }
}

describe("cancelling a running keyed step that ignores its abort", () => {
  it("keeps the key held until the step's code settles", async () => {
    log.length = 0;
    const worker = db.engine({ queues: { stubborn: 4 }, machines: [Stubborn], pollInterval: "50ms" });
    await worker.start();
    const a = await client.insert(Stubborn, { args: { name: "a", hang: "gate" }, concurrencyKey: "ledger" });
    await eventually("a started", () => log.includes("a start"));
    await client.insert(Stubborn, { args: { name: "b", hang: "no" }, concurrencyKey: "ledger" });
    await client.cancel(a.id, "stop");
    await claimsWhile(worker, 5);
    expect(log).toEqual(["a start"]);
    gates.get("a")!();
    await eventually("b ran", () => log.includes("b end"));
    expect(log).toEqual(["a start", "a end", "b start", "b end"]);
    await worker.stop();
  });

  it("frees the key when the lease of a step that never settles expires", async () => {
    log.length = 0;
    const worker = db.engine({
      queues: { stubborn: 4 },
      machines: [Stubborn],
      pollInterval: "50ms",
      leaseDuration: "1s",
      reaperInterval: "100ms",
    });
    await worker.start();
    const c = await client.insert(Stubborn, { args: { name: "c", hang: "forever" }, concurrencyKey: "ledger2" });
    await eventually("c started", () => log.includes("c start"));
    const d = await client.insert(Stubborn, { args: { name: "d", hang: "no" }, concurrencyKey: "ledger2" });
    const cancelledAt = Date.now();
    await client.cancel(c.id, "stop");
    await claimsWhile(worker, 3);
    expect(log).toEqual(["c start"]);
    expect((await client.wait(d.id, { timeout: 10_000 })).status).toBe("done");
    // Not before the lease (1 s) ran out.
    expect(Date.now() - cancelledAt).toBeGreaterThanOrEqual(500);
    expect(log).toEqual(["c start", "d start", "d end"]);
    await worker.stop();
  });
});
