// A signal holds its instance's row lock until it commits, and a claim skips locked rows. A claim
// that ran meanwhile passed the row over; unless something wakes the queue again, the step waited
// for the next poll. Here the poll is a minute away: every wake-up below must come from the
// commits themselves, so a lost one fails the test instead of adding a poll interval of latency.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine } from "../../src/index.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

const Pair = defineMachine({
  name: "WakePair",
  queue: "wake",
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.await({ all: ["a", "b"] }, "finish"),
    finish: (ctx) => ctx.done(ctx.awaited.map((s) => s.event).sort()),
  },
});

const Chain = defineMachine({
  name: "WakeChain",
  queue: "wake",
  state: z.object({ n: z.number() }),
  steps: {
    start: (ctx) => (ctx.state.n >= 40 ? ctx.done(ctx.state.n) : ctx.next("start", { n: ctx.state.n + 1 })),
  },
});

const worker = db.engine({ queues: { wake: 4 }, machines: [Pair, Chain], pollInterval: "60s" });
const client = db.engine({ pollInterval: "60s" });
await worker.start();
await client.start();

describe("wake-ups with the poll a minute away", () => {
  it("starts an instance signalled right after its insert within milliseconds, 30 times in a row", async () => {
    const started = new Map<string, number>();
    const off = worker.on("step:start", (e) => e.step === "start" && started.set(e.id, performance.now()));
    const toStart: number[] = [];
    const toFinish: number[] = [];
    for (let i = 0; i < 30; i++) {
      const inserted = performance.now();
      const { id } = await client.insert(Pair, { state: {} });
      await client.signal({ id }, "a");
      await client.signal({ id }, "b");
      const signalled = performance.now();
      const done = await client.wait(id, { timeout: 10_000 });
      expect(done.result).toEqual(["a", "b"]);
      toStart.push(started.get(id)! - inserted);
      toFinish.push(performance.now() - signalled);
    }
    off();
    const p = (xs: number[], q: number) => [...xs].sort((a, b) => a - b)[Math.ceil(q * xs.length) - 1]!.toFixed(0);
    console.log(
      `wakeups (poll 60 s, 30 runs): insert → first step started p50 ${p(toStart, 0.5)} ms, max ${p(toStart, 1)} ms; ` +
        `second signal → done p50 ${p(toFinish, 0.5)} ms, max ${p(toFinish, 1)} ms`,
    );
  });

  it("runs a 40-step chain while unrelated signals hit it back to back", async () => {
    const { id } = await client.insert(Chain, { state: { n: 0 } });
    let sending = true;
    const sent = (async () => {
      let n = 0;
      while (sending) {
        await client.signal({ id }, "noise").catch(() => {});
        n++;
      }
      return n;
    })();
    try {
      const done = await client.wait(id, { timeout: 20_000 });
      expect(done.result).toBe(40);
    } finally {
      sending = false;
      console.log(`wakeups: ${await sent} signals sent during the 40-step chain`);
    }
  });
});
