// How an insert or a signal outside a caller's transaction wakes the nodes: with a NOTIFY in its own
// commit only when it is alone in flight on a pure client engine; otherwise after the commit, this
// engine's scheduler first (nodeWakeups.broadcast), so that the caller does not wait for Postgres's
// notify lock and the listener's wake-up does not run beside this node's claim.
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { beginWrite, type ClientContext } from "../../src/client/context.js";
import { sendSignal } from "../../src/client/signal.js";
import { Notifier } from "../../src/runtime/notifier.js";
import type { DeliverInput } from "../../src/runtime/signals.js";

function context(queues: string[]) {
  const woken: string[] = [];
  const sent: DeliverInput[] = [];
  const ctx = {
    config: { queues: new Map(queues.map((q) => [q, 1])), channel: "gd_wake", maxPayloadBytes: 1 << 20 },
    notifier: new Notifier(undefined as unknown as pg.Pool, "gd_wake", () => {}),
    wake: {
      queue: (queue: string) => woken.push(`local ${queue}`),
      broadcast: (queue: string) => woken.push(`broadcast ${queue}`),
    },
    signals: {
      send: async (input: DeliverInput) => {
        sent.push(input);
        return { signalId: "1", instanceId: "7", resumedQueue: "q" };
      },
    },
    assertUsable: () => {},
  } as unknown as ClientContext;
  return { ctx, woken, sent };
}

describe("beginWrite", () => {
  it("notifies with the commit for a write alone on a pure client engine, and wakes only locally after", () => {
    const { ctx, woken } = context([]);
    const write = beginWrite(ctx);
    expect(write.channel).toBe("gd_wake");
    write.due("q");
    write.end();
    expect(woken).toEqual(["local q"]);
  });

  it("leaves the NOTIFY to after the commit when another write is in flight", () => {
    const { ctx, woken } = context([]);
    const first = beginWrite(ctx);
    const second = beginWrite(ctx);
    expect(second.channel).toBeNull();
    second.due("q");
    second.end();
    first.end();
    expect(woken).toEqual(["broadcast q"]);
    // Both over: the next one is alone again.
    expect(beginWrite(ctx).channel).toBe("gd_wake");
  });

  it("leaves the NOTIFY to after the commit on an engine that runs queues", () => {
    const { ctx, woken } = context(["q"]);
    const write = beginWrite(ctx);
    expect(write.channel).toBeNull();
    write.due("q");
    expect(woken).toEqual(["broadcast q"]);
  });
});

describe("engine.signal's wake-ups", () => {
  it("ends its write when the delivery fails, so the next one is alone again", async () => {
    const { ctx, woken } = context([]);
    const failing = { ...ctx, signals: { send: () => Promise.reject(new Error("connection lost")) } };
    await expect(sendSignal(failing as unknown as ClientContext, "order-1", "paid", {})).rejects.toThrow(
      "connection lost",
    );
    expect(woken).toEqual([]);
    expect(beginWrite(ctx).channel).toBe("gd_wake");
  });

  it("on an engine that runs queues: no NOTIFY in the signal's commit, its node's scheduler first after it", async () => {
    const { ctx, woken, sent } = context(["q"]);
    await sendSignal(ctx, "order-1", "paid", { ok: true });
    expect(sent.map((s) => s.notifyChannel)).toEqual([null]);
    expect(woken).toEqual(["broadcast q"]);
  });

  it("on a pure client engine, alone: the NOTIFY goes with the commit", async () => {
    const { ctx, woken, sent } = context([]);
    await sendSignal(ctx, "order-1", "paid", { ok: true });
    expect(sent.map((s) => s.notifyChannel)).toEqual(["gd_wake"]);
    expect(woken).toEqual(["local q"]);
  });

  it("on a pure client engine, beside another write: the engine notifies after the commit", async () => {
    const { ctx, woken, sent } = context([]);
    const insert = beginWrite(ctx);
    await sendSignal(ctx, "order-1", "paid", { ok: true });
    insert.end();
    expect(sent.map((s) => s.notifyChannel)).toEqual([null]);
    expect(woken).toEqual(["broadcast q"]);
  });
});
