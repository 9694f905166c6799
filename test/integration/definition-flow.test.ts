// Flow control declared on a definition: a concurrency key from the input, applied by insert, insertMany,
// ctx.spawn and cron, overridden by a call's own concurrencyKey; a machine-wide rateLimit default.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { ConfigError, defineJob, defineMachine, ValidationError } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

/** Runs in flight per account, and the most seen at once. */
const running = new Map<string, number>();
const most = new Map<string, number>();
const Transfer = defineJob({
  name: "Transfer",
  queue: "flow",
  args: z.object({ account: z.string(), n: z.number() }),
  concurrency: { key: (args) => `account:${args.account}` },
  perform: async ({ account, n }) => {
    running.set(account, (running.get(account) ?? 0) + 1);
    most.set(account, Math.max(most.get(account) ?? 0, running.get(account)!));
    // Yield a few times, so overlapping runs would overlap here.
    for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
    running.set(account, running.get(account)! - 1);
    return n;
  },
});

const Batch = defineMachine({
  name: "Batch",
  queue: "flow",
  state: z.object({ account: z.string() }),
  steps: {
    start: (ctx) =>
      ctx.spawn(
        [1, 2].map((n) => ({ machine: Transfer, args: { account: ctx.state.account, n } })),
        "end",
      ),
    end: (ctx) => ctx.done(ctx.children.map((c) => c.result)),
  },
});

const Limited = defineMachine({
  name: "Limited",
  queue: "flow",
  state: z.object({}),
  rateLimit: { name: "api" },
  steps: {
    start: (ctx) => ctx.next("own"),
    own: { run: (ctx) => ctx.done(), rateLimit: { name: "other" } },
  },
});

const engine = db.engine({
  queues: { flow: 8 },
  machines: [Transfer, Batch, Limited],
  pollInterval: 50,
  rateLimits: { api: { limit: 1000, period: "1s" }, other: { limit: 1000, period: "1s" } },
  cron: [{ name: "sweep", schedule: "* * * * * *", machine: Transfer, args: { account: "cron", n: 0 } }],
});
await engine.start();

const keyOf = async (id: string) => (await engine.get(id))?.concurrencyKey;

describe("flow control on the definition", () => {
  it("insert and insertMany take the key from the input; a call's own key wins, null opts out", async () => {
    const one = await engine.insert(Transfer, { args: { account: "a", n: 1 } });
    const own = await engine.insert(Transfer, { args: { account: "a", n: 2 }, concurrencyKey: "mine" });
    const none = await engine.insert(Transfer, { args: { account: "a", n: 3 }, concurrencyKey: null });
    const many = await engine.insertMany(
      Array.from({ length: 20 }, (_, n) => ({ machine: Transfer, args: { account: n % 2 ? "b" : "c", n } })),
    );
    expect(await keyOf(one.id)).toBe("account:a");
    expect(await keyOf(own.id)).toBe("mine");
    expect(await keyOf(none.id)).toBeNull();
    expect(await keyOf(many[0]!.id)).toBe("account:c");
    expect(await keyOf(many[1]!.id)).toBe("account:b");
    for (const { id } of [one, own, none, ...many]) await engine.wait(id, { timeout: 10_000 });
  });

  it("instances of one key never overlap", async () => {
    const rows = await engine.insertMany(
      Array.from({ length: 12 }, (_, n) => ({ machine: Transfer, args: { account: "serial", n } })),
    );
    for (const { id } of rows) await engine.wait(id, { timeout: 10_000 });
    expect(most.get("serial")).toBe(1);
  });

  it("ctx.spawn children and cron instances get the definition's key", async () => {
    const { id } = await engine.insert(Batch, { state: { account: "d" } });
    expect((await engine.wait(id, { timeout: 10_000 })).result).toEqual([1, 2]);
    const children = (await engine.list({ machine: "Transfer" })).filter((c) => c.parentId === id);
    expect(children.map((c) => c.concurrencyKey)).toEqual(["account:d", "account:d"]);
    await eventually("a cron instance", async () =>
      (await engine.list({ machine: "Transfer" })).some((i) => i.concurrencyKey === "account:cron"),
    );
  });

  it("a machine's rateLimit is the default of its steps", () => {
    expect(Limited.steps.get("start")!.rateLimit?.name).toBe("api");
    expect(Limited.steps.get("own")!.rateLimit?.name).toBe("other");
  });

  it("bad options: a clear error", async () => {
    const args = z.object({ n: z.number() });
    const perform = async () => 1;
    expect(() => defineJob({ name: "J", args, perform, concurrency: { key: "x" } as never })).toThrow(ConfigError);
    for (const limit of [0, 1.5, "3", 100_001]) {
      expect(() => defineJob({ name: "J", args, perform, concurrency: { key: () => "k", limit } as never })).toThrow(
        /concurrency\.limit must be an integer from 1 to 100000/,
      );
    }
    const Throws = defineJob({
      name: "Throws",
      queue: "flow",
      args,
      perform,
      concurrency: {
        key: (a) => {
          if (a.n < 0) throw new Error("negative");
          return a.n === 0 ? ("" as string) : `n:${a.n}`;
        },
      },
    });
    await expect(engine.insert(Throws, { args: { n: -1 } })).rejects.toThrow(
      /insert: the concurrency.key of Throws threw: negative/,
    );
    await expect(engine.insert(Throws, { args: { n: 0 } })).rejects.toThrow(ValidationError);
  });
});
