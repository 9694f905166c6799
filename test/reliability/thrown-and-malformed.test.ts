// Scenarios 7 and 8: whatever a step throws, and whatever malformed value reaches insert, signal or
// a step's outcome, ends as a stored, bounded, valid record (or a ValidationError to the caller),
// with no crash, no prototype pollution, and memory back near its baseline after a 100 MB value.
// The large cases run at full size (100 MB strings, 100,000 levels); RELIABILITY_FULL=1 repeats the
// 100 MB round 10 times instead of 3.
import v8 from "node:v8";
import vm from "node:vm";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine, ValidationError } from "../../src/index.js";
import { LONE_SURROGATE } from "../../src/names.js";
import { useTestDatabase } from "../support/db.js";

const FULL = process.env.RELIABILITY_FULL === "1";
const BIG_MB = 100;
const BIG_ROUNDS = FULL ? 10 : 3;
const DEPTH = 100_000;

const db = await useTestDatabase(import.meta.url);
const S = `"${db.schema}"`;

function deep(levels: number): unknown {
  let value: unknown = "bottom";
  for (let i = 0; i < levels; i++) value = { down: value };
  return value;
}
const circular = (): unknown => {
  const o: Record<string, unknown> = { a: 1 };
  o.self = o;
  return o;
};
const throwingTraps = (): unknown =>
  new Proxy(
    {},
    {
      get: () => {
        throw new Error("get trap");
      },
      getPrototypeOf: () => {
        throw new Error("getPrototypeOf trap");
      },
      ownKeys: () => {
        throw new Error("ownKeys trap");
      },
      has: () => {
        throw new Error("has trap");
      },
      getOwnPropertyDescriptor: () => {
        throw new Error("descriptor trap");
      },
    },
  );
const revoked = (): unknown => {
  const { proxy, revoke } = Proxy.revocable({}, {});
  revoke();
  return proxy;
};

/** Thrown values that are not well-behaved Errors. */
const THROWN: Array<[string, () => unknown]> = [
  ["undefined", () => undefined],
  ["null", () => null],
  ["a string", () => "plain string"],
  ["an empty string", () => ""],
  ["a number", () => 42],
  ["NaN", () => Number.NaN],
  ["a bigint", () => 10n ** 30n],
  ["a symbol", () => Symbol("thrown")],
  ["true", () => true],
  ["a function", () => () => 1],
  [
    "an object with a throwing message getter",
    () => ({
      get message() {
        throw new Error("message getter");
      },
    }),
  ],
  [
    "an object with throwing toString and toJSON",
    () => ({
      toString() {
        throw new Error("toString");
      },
      toJSON() {
        throw new Error("toJSON");
      },
    }),
  ],
  ["a circular object", circular],
  ["a 100,000-deep object", () => deep(DEPTH)],
  ["an object without prototype", () => Object.assign(Object.create(null), { message: "no proto" })],
  ["a frozen object", () => Object.freeze({ message: "frozen" })],
  ["a frozen Error", () => Object.freeze(new Error("frozen error"))],
  ["a Proxy whose every trap throws", throwingTraps],
  ["a revoked Proxy", revoked],
  [
    "an object with __proto__ and constructor keys",
    () =>
      JSON.parse('{"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}},"message":"proto"}'),
  ],
  [
    "an Error with an object message and a numeric stack",
    () => {
      const e = new Error("x");
      Object.defineProperty(e, "message", { value: { not: "a string" } });
      Object.defineProperty(e, "stack", { value: 42 });
      return e;
    },
  ],
  [
    "an Error subclass whose name, message and stack getters throw",
    () => {
      class Weird extends Error {
        override get name(): string {
          throw new Error("name getter");
        }
        override get message(): string {
          throw new Error("message getter");
        }
        override get stack(): string {
          throw new Error("stack getter");
        }
      }
      return new Weird();
    },
  ],
  [
    "an Error with NUL and lone surrogates in name, message, stack and code",
    () => {
      const e = new Error("a\u0000b\ud800c");
      e.name = "Bad\u0000Name\udc00";
      e.stack = "stack\u0000\ud800";
      (e as { code?: string }).code = "E\u0000\ud800";
      return e;
    },
  ],
  [
    "an Error with a 10 MB message, a 1 MB name and a 10 MB stack",
    () => {
      const e = new Error("m".repeat(10_000_000));
      e.name = "n".repeat(1_000_000);
      e.stack = "s".repeat(10_000_000);
      return e;
    },
  ],
  [
    "an Error that is its own cause",
    () => {
      const e = new Error("cyclic cause");
      (e as { cause?: unknown }).cause = e;
      return e;
    },
  ],
  [
    "an Error whose cause getter throws",
    () => {
      const e = new Error("cause getter");
      Object.defineProperty(e, "cause", {
        get() {
          throw new Error("no cause");
        },
      });
      return e;
    },
  ],
  [
    "an AggregateError whose errors getter throws",
    () => {
      const e = new AggregateError([], "aggregate");
      Object.defineProperty(e, "errors", {
        get() {
          throw new Error("errors getter");
        },
      });
      return e;
    },
  ],
  ["an Error whose message is a lone surrogate cut by the bound", () => new Error("x".repeat(8191) + "\ud83d\ude00")],
  ["a Date", () => new Date(0)],
  ["a Map", () => new Map([[1, 2]])],
  ["a 1,000,000-element array", () => Array.from({ length: 1_000_000 }, (_, i) => i)],
];

/** Values that are not storable JSON, or that stop being so on a second read. */
const MALFORMED: Array<[string, () => unknown]> = [
  ["undefined", () => undefined],
  ["a function", () => () => 1],
  ["a symbol", () => Symbol("s")],
  ["a bigint", () => ({ n: 10n })],
  ["NaN", () => ({ n: Number.NaN })],
  ["Infinity", () => [Number.POSITIVE_INFINITY]],
  ["-Infinity", () => ({ n: Number.NEGATIVE_INFINITY })],
  ["a Date", () => ({ at: new Date(0) })],
  ["a Map", () => ({ m: new Map([[1, 2]]) })],
  ["a Set", () => new Set([1])],
  ["a Uint8Array", () => new Uint8Array(4)],
  ["a boxed string", () => ({ s: new String("boxed") })],
  ["a circular structure", circular],
  ["a lone surrogate in a string", () => ({ s: "a\ud800b" })],
  ["NUL in a string", () => ({ s: "a\u0000b" })],
  ["a lone surrogate in a key", () => ({ "k\udc00": 1 })],
  ["NUL in a key", () => ({ "k\u0000": 1 })],
  ["a 100,000-deep object", () => deep(DEPTH)],
  ["an object whose prototype is another object", () => ({ __proto__: { polluted: "yes" } })],
  [
    "an array with a hole",
    () => {
      const holed = [1, 2, 3];
      delete holed[1];
      return holed;
    },
  ],
  ["a thenable that never settles", () => ({ then() {} })],
  ["a Proxy whose every trap throws", throwingTraps],
  ["a revoked Proxy", revoked],
  [
    "an object with a throwing getter",
    () => ({
      get boom() {
        throw new Error("getter");
      },
    }),
  ],
  ["an array with its own toJSON", () => Object.assign([1, 2], { toJSON: () => "a\u0000b" })],
  ["an array whose prototype has a toJSON", () => Object.setPrototypeOf([1], { toJSON: () => ({ x: "\ud800" }) })],
];

/** Valid on the first read, not on the second: what is checked (the first read) is what is stored. */
const FICKLE: Array<[string, () => unknown]> = [
  [
    "a getter that turns into NUL on its second read",
    () => {
      let reads = 0;
      return {
        get s() {
          return reads++ === 0 ? "fine" : "a\u0000b";
        },
      };
    },
  ],
  [
    "a getter that turns into a bigint on its second read",
    () => {
      let reads = 0;
      return {
        get n() {
          return reads++ === 0 ? 1 : 1n;
        },
      };
    },
  ],
];

/** Valid JSON that looks dangerous: stored as given, as own keys, polluting nothing. */
const PROTO_JSON = '{"__proto__":{"polluted":"yes"},"constructor":{"prototype":{"polluted":"yes"}},"ok":1}';

const Thrower = defineJob({
  name: "Thrower",
  queue: "rel78",
  args: z.object({ i: z.number() }),
  maxAttempts: 1,
  perform: async ({ i }) => {
    throw THROWN[i]![1]();
  },
});

const Child = defineJob({ name: "Child78", queue: "rel78", args: z.unknown(), perform: async () => null });

type Kind = "next" | "done" | "job" | "spawn" | "cancel" | "snooze" | "await";
const KINDS: Kind[] = ["next", "done", "spawn", "cancel", "snooze", "await"];
const source = (i: number): unknown =>
  i === -1 ? JSON.parse(PROTO_JSON) : i <= -10 ? FICKLE[-10 - i]![1]() : MALFORMED[i]![1]();

const Emitter = defineMachine({
  name: "Emitter",
  queue: "rel78",
  state: z.unknown(),
  maxAttempts: 1,
  steps: {
    start: (ctx) => {
      const { i, kind } = ctx.state as { i: number; kind: Kind };
      const value = source(i);
      switch (kind) {
        case "next":
          return ctx.next("end", value);
        case "done":
          return ctx.done(value);
        case "spawn":
          return ctx.spawn([{ machine: Child, args: value }], "end");
        case "cancel":
          return ctx.cancel(value as string);
        case "snooze":
          return ctx.snooze(value as never);
        case "await":
          return ctx.await(value as never, "end");
        default:
          throw new Error(`unexpected kind ${kind}`);
      }
    },
    end: (ctx) => ctx.done(ctx.state),
  },
});
const Returner = defineJob({
  name: "Returner",
  queue: "rel78",
  args: z.object({ i: z.number() }),
  maxAttempts: 1,
  timeout: "3s",
  perform: async ({ i }) => source(i),
});
const Open = defineMachine({
  name: "Open",
  queue: "idle78",
  state: z.unknown(),
  steps: { start: (ctx) => ctx.done() },
});

const client = db.engine({ leaseDuration: "60s" });
const worker = db.engine({
  queues: { rel78: 8 },
  machines: [Thrower, Child, Emitter, Returner],
  leaseDuration: "60s",
  maxPayloadBytes: 1024 * 1024,
});
await client.start();
await worker.start();
let crashes = 0;
const onCrash = () => crashes++;
process.on("uncaughtException", onCrash);
process.on("unhandledRejection", onCrash);
afterAll(() => {
  process.off("uncaughtException", onCrash);
  process.off("unhandledRejection", onCrash);
});

/** An error record as stored: a plain object of bounded, storable strings, its causes likewise. */
function expectValidRecord(record: unknown, depth = 0): void {
  expect(depth).toBeLessThanOrEqual(6);
  expect(record).toBeTypeOf("object");
  const { name, message, stack, code, cause, ...rest } = record as Record<string, unknown>;
  expect(Object.keys(rest)).toEqual([]);
  for (const [text, max] of [
    [name, 200],
    [message, 8 * 1024],
  ] as const) {
    expect(text).toBeTypeOf("string");
    expect((text as string).length).toBeGreaterThan(0);
    expect((text as string).length).toBeLessThanOrEqual(max);
  }
  for (const text of [name, message, stack, code]) {
    if (text === undefined) continue;
    expect(text).toBeTypeOf("string");
    expect((text as string).includes("\u0000")).toBe(false);
    expect(LONE_SURROGATE.test(text as string)).toBe(false);
  }
  if (stack !== undefined) expect((stack as string).length).toBeLessThanOrEqual(32 * 1024);
  if (cause !== undefined) expectValidRecord(cause, depth + 1);
}

function expectNoPollution(): void {
  expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  expect(Object.prototype).not.toHaveProperty("polluted");
  expect(Object.getOwnPropertyNames(Object.prototype).sort()).toEqual(PROTO_KEYS);
}
const PROTO_KEYS = Object.getOwnPropertyNames(Object.prototype).sort();

async function counts(): Promise<{ instances: number; signals: number }> {
  const { rows } = await db.pool.query(
    `select (select count(*)::int from ${S}.instances) as instances, (select count(*)::int from ${S}.signals) as signals`,
  );
  return rows[0];
}

describe("a step that throws something that is not a well-behaved Error", () => {
  it(`stores a bounded, valid error record for each of ${THROWN.length} thrown values`, async () => {
    const ids = await client.insertMany(THROWN.map((_, i) => ({ machine: Thrower, args: { i } })));
    const rows = await Promise.all(ids.map(({ id }) => client.wait(id, { timeout: 30_000 })));
    const sizes: number[] = [];
    for (const [i, row] of rows.entries()) {
      expect(row.status, THROWN[i]![0]).toBe("failed");
      expectValidRecord(row.error);
      const history = await client.history(row.id);
      expectValidRecord(history.at(-1)!.error);
      const { rows: raw } = await db.pool.query(`select length(error::text) as n from ${S}.instances where id = $1`, [
        row.id,
      ]);
      sizes.push(raw[0].n);
    }
    expect(rows[0]!.error!.message).toMatch(/threw undefined instead of an Error/);
    expect(rows[2]!.error!.message).toBe("plain string");
    console.log(
      `${THROWN.length} thrown values, each stored as a failed attempt; largest stored error ` +
        `${Math.max(...sizes)} characters of JSON`,
    );
    expect(crashes).toBe(0);
    expectNoPollution();
  });
});

describe("malformed payloads", () => {
  const live = client.insert(Open, { state: { open: true } });

  it.each(MALFORMED)("at insert: %s is a ValidationError and nothing is written", async (_label, make) => {
    const before = await counts();
    await expect(client.insert(Open, { state: make() })).rejects.toBeInstanceOf(ValidationError);
    await expect(client.insertMany([{ machine: Open, state: make() }])).rejects.toBeInstanceOf(ValidationError);
    expect(await counts()).toEqual(before);
    expectNoPollution();
  });

  // An undefined payload is an omitted one (null), as documented.
  it.each(MALFORMED.slice(1))("at signal: %s is a ValidationError and nothing is written", async (_label, make) => {
    const { id } = await live;
    const before = await counts();
    await expect(client.signal({ id }, "evt", make())).rejects.toBeInstanceOf(ValidationError);
    await expect(client.signal("kept:key", "evt", make(), { ifMissing: "keep" })).rejects.toBeInstanceOf(
      ValidationError,
    );
    expect(await counts()).toEqual(before);
    expectNoPollution();
  });

  it(`as a step's outcome (${KINDS.join(", ")}): each fails its attempt or ends with a valid record`, async () => {
    const items = MALFORMED.flatMap((_, i) => [
      ...KINDS.map((kind) => ({ machine: Emitter, state: { i, kind } })),
      { machine: Returner, args: { i } },
    ]);
    const ids = await client.insertMany(items as never);
    const rows = await Promise.all(ids.map(({ id }) => client.wait(id, { timeout: 60_000 })));
    const tally: Record<string, number> = {};
    for (const [n, row] of rows.entries()) {
      const item = items[n] as { state?: { i: number; kind: Kind }; args?: { i: number } };
      const i = item.state?.i ?? item.args!.i;
      const kind = item.state?.kind ?? "job";
      const label = `${MALFORMED[i]![0]} as ${kind}`;
      tally[row.status] = (tally[row.status] ?? 0) + 1;
      if (kind === "cancel") {
        // A reason is any value turned into a bounded, cleaned message, or a failed attempt.
        expect(["cancelled", "failed"], label).toContain(row.status);
      } else if (["done", "job", "next", "await", "spawn"].includes(kind) && i === 0) {
        // undefined is an omitted argument: no result (null), or the state kept
        expect(["done", "failed"], label).toContain(row.status);
      } else {
        expect(row.status, label).toBe("failed");
      }
      if (row.status !== "done") expectValidRecord(row.error);
      if (row.status === "failed" && ["next", "done", "job", "spawn"].includes(kind) && i !== 0) {
        // A job's async perform resolving to a thenable or a Proxy reads its `then`, as any async function does:
        // that throws (the Proxy) or never settles (the thenable: a step timeout), a failed attempt either way.
        const adopted = kind === "job" && /thenable|Proxy/.test(MALFORMED[i]![0]);
        if (!adopted) expect(`${row.error!.name}: ${row.error!.message}`, label).toMatch(/^ValidationError/);
      }
    }
    const { rows: children } = await db.pool.query(`select count(*)::int as n from ${S}.instances where machine = $1`, [
      "Child78",
    ]);
    expect(children[0].n).toBe(0);
    console.log(
      `${MALFORMED.length} malformed values × ${KINDS.length + 1} outcome kinds = ${rows.length} ` +
        `instances: ${JSON.stringify(tally)}; no child inserted`,
    );
    expect(crashes).toBe(0);
    expectNoPollution();
  });

  it("stores __proto__ and constructor keys as own keys at insert, signal and as a result, polluting nothing", async () => {
    const { id } = await client.insert(Open, { state: JSON.parse(PROTO_JSON) });
    const stored = (await client.get(id))!.state as Record<string, unknown>;
    expect(Object.getPrototypeOf(stored)).toBe(Object.prototype);
    expect(Object.hasOwn(stored, "__proto__")).toBe(true);
    expect(Object.keys(stored).sort()).toEqual(["__proto__", "constructor", "ok"]);
    expect(JSON.parse(JSON.stringify(stored))).toEqual(JSON.parse(PROTO_JSON));
    await client.signal({ id }, "evt", JSON.parse(PROTO_JSON));
    const { rows } = await db.pool.query(`select payload::text from ${S}.signals where instance_id = $1`, [id]);
    expect(JSON.parse(rows[0].payload)).toEqual(JSON.parse(PROTO_JSON));
    const done = await client.wait((await client.insert(Returner, { args: { i: -1 } })).id, { timeout: 30_000 });
    expect(done.status).toBe("done");
    expect(JSON.parse(JSON.stringify(done.result))).toEqual(JSON.parse(PROTO_JSON));
    expect(Object.hasOwn(done.result as object, "__proto__")).toBe(true);
    expectNoPollution();
  });
});

describe("a value that changes between reads", () => {
  it.each(FICKLE.map(([label], k) => [label, k] as const))(
    "%s: its first read is checked and stored, at insert, signal and as a step's outcome",
    async (_label, k) => {
      const first = JSON.parse(JSON.stringify(FICKLE[k]![1]()));
      const { id } = await client.insert(Open, { state: FICKLE[k]![1]() });
      expect((await client.get(id))!.state).toEqual(first);
      const { signalId } = await client.signal({ id }, "evt", FICKLE[k]![1]());
      const { rows } = await db.pool.query(`select payload from ${S}.signals where id = $1`, [signalId]);
      expect(rows[0].payload).toEqual(first);
      const job = await client.insert(Returner, { args: { i: -10 - k } });
      expect((await client.wait(job.id, { timeout: 30_000 })).result).toEqual(first);
      const next = await client.insert(Emitter, { state: { i: -10 - k, kind: "next" } });
      expect((await client.wait(next.id, { timeout: 30_000 })).result).toEqual(first);
    },
  );
});

describe(`a ${BIG_MB} MB string`, () => {
  v8.setFlagsFromString("--expose-gc");
  const gc = vm.runInNewContext("gc") as () => void;
  const heapAfterGc = () => {
    gc();
    gc();
    return process.memoryUsage().heapUsed;
  };
  const Big = defineJob({
    name: "Big",
    queue: "big78",
    args: z.object({}),
    maxAttempts: 1,
    perform: async () => ({ big: "x".repeat(BIG_MB * 1024 * 1024) }),
  });
  const bigWorker = db.engine({ queues: { big78: 1 }, machines: [Big] });

  it("is refused at insert, at signal and as a result, and memory returns near its baseline", async () => {
    await bigWorker.start();
    const { id } = await client.insert(Open, { state: {} });
    const before = heapAfterGc();
    let peak = 0;
    // In a function of its own, so that nothing of this test's frame keeps the string alive.
    const round = async () => {
      const big = "y".repeat(BIG_MB * 1024 * 1024);
      peak = Math.max(peak, process.memoryUsage().heapUsed);
      await expect(client.insert(Open, { state: { big } })).rejects.toThrow(/over the limit of 1048576 bytes/);
      await expect(client.signal({ id }, "evt", { big })).rejects.toThrow(/over the limit of 1048576 bytes/);
      const { id: job } = await client.insert(Big, { args: {} });
      const failed = await client.wait(job, { timeout: 60_000 });
      expect(failed.status).toBe("failed");
      expect(failed.error!.message).toMatch(/over the limit of 1048576 bytes/);
      expectValidRecord(failed.error);
    };
    for (let n = 0; n < BIG_ROUNDS; n++) await round();
    const after = heapAfterGc();
    const mb = (n: number) => (n / 1024 / 1024).toFixed(1);
    console.log(
      `${BIG_MB} MB string ×${BIG_ROUNDS} at insert, signal and as a result: heapUsed after gc ${mb(before)} MB ` +
        `before, ${mb(peak)} MB at the peak, ${mb(after)} MB after (${mb(after - before)} MB more)`,
    );
    expect(after - before).toBeLessThan(20 * 1024 * 1024);
    expect(crashes).toBe(0);
    expectNoPollution();
  }, 120_000);
});
