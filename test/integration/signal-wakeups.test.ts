// A signal to a runnable or running instance locks its row `for update` while the claim skips locked
// rows: a claim that passed the row over must be followed by another once the signal commits, or the
// next step waits for the poll. The poll here is an hour away, so only wake-ups move the chain: a lost
// one leaves it stuck and the test fails at its deadline instead of merely running slow.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const STEPS = 40;

const Chain = defineMachine({
  name: "Chain",
  queue: "chain",
  state: z.object({ n: z.number() }),
  steps: {
    start: (ctx) => (ctx.state.n >= STEPS ? ctx.done(ctx.state.n) : ctx.next("start", { n: ctx.state.n + 1 })),
  },
});

const engine = db.engine({ queues: { chain: 4 }, machines: [Chain], pollInterval: "1h" });
await engine.start();

/** Sends an event the chain never awaits to `id`, every `everyMs` (0: back to back), until stopped. */
function pester(id: string, everyMs: number): { stop: () => Promise<number> } {
  let stopped = false;
  let sent = 0;
  const loop = (async () => {
    while (!stopped) {
      try {
        await engine.signal({ id }, "unrelated", { sent });
        sent++;
      } catch {
        return; // the chain finished: signals to a done instance are refused
      }
      if (everyMs > 0) await new Promise((resolve) => setTimeout(resolve, everyMs));
    }
  })();
  return { stop: async () => ((stopped = true), await loop, sent) };
}

async function runChain(everyMs: number): Promise<{ steps: number; signals: number }> {
  let steps = 0;
  const off = engine.on("step:stop", (e) => e.machine === "Chain" && steps++);
  const { id } = await engine.insert(Chain, { state: { n: 0 } });
  const pest = pester(id, everyMs);
  try {
    await eventually(
      `the ${STEPS + 1}-step chain to finish`,
      async () => (await engine.get(id))?.status === "done",
      30_000,
    );
    // The last step's step:stop is emitted once its commit's reply is back: the row can read done first.
    await eventually(`the step:stop of each of the ${STEPS + 1} steps`, () => steps >= STEPS + 1);
  } finally {
    off();
  }
  return { steps, signals: await pest.stop() };
}

describe("signals to a runnable or running instance do not stall its next step", () => {
  it("a chain with an unrelated signal every 50 ms finishes on wake-ups alone", async () => {
    const { steps, signals } = await runChain(50);
    expect(steps).toBe(STEPS + 1);
    expect(signals).toBeGreaterThan(0);
  }, 60_000);

  it("a chain with unrelated signals back to back finishes on wake-ups alone", async () => {
    const { steps, signals } = await runChain(0);
    expect(steps).toBe(STEPS + 1);
    expect(signals).toBeGreaterThan(0);
  }, 60_000);
});
