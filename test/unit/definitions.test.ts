import { describe, expect, it } from "vitest";
import * as v from "valibot";
import { z } from "zod";
import { ConfigError, defineJob, defineMachine, GenDurable } from "../../src/index.js";
import { parseDuration } from "../../src/duration.js";
import { resolveBackoff } from "../../src/backoff.js";
import { matchSpec, normalizeSpec } from "../../src/runtime/await-spec.js";

const state = z.object({ n: z.number() });

describe("defineMachine", () => {
  it("accepts zod and valibot schemas", () => {
    expect(defineMachine({ name: "Z", state, steps: { start: (ctx) => ctx.done() } }).name).toBe("Z");
    expect(
      defineMachine({ name: "V", state: v.object({ n: v.number() }), steps: { start: (ctx) => ctx.done(ctx.state.n) } })
        .name,
    ).toBe("V");
  });

  it("rejects an unknown option and suggests the right one", () => {
    expect(() =>
      defineMachine({ name: "M", state, steps: { start: () => null }, maxAtempts: 3 } as never),
    ).toThrowError(/unknown option "maxAtempts" \(did you mean "maxAttempts"\?\)/);
  });

  it("rejects an initial step that does not exist", () => {
    expect(() =>
      defineMachine({ name: "M", state, initial: "strat" as never, steps: { start: (ctx) => ctx.done() } }),
    ).toThrowError(/initial step "strat" is not one of its steps \(start\) \(did you mean "start"\?\)/);
    expect(() => defineMachine({ name: "M", state, steps: { begin: (ctx) => ctx.done() } })).toThrowError(
      /initial step "start"/,
    );
  });

  it("rejects a state that is not a Standard Schema", () => {
    expect(() =>
      defineMachine({ name: "M", state: { n: 1 } as never, steps: { start: (ctx) => ctx.done() } }),
    ).toThrowError(/state must be a Standard Schema/);
  });

  it("rejects bad step definitions and step options", () => {
    expect(() => defineMachine({ name: "M", state, steps: { start: 5 as never } as never })).toThrowError(
      /steps\.start must be a function/,
    );
    expect(() =>
      defineMachine({ name: "M", state, steps: { start: { run: () => null, timout: "1s" } as never } }),
    ).toThrowError(/unknown option "timout" \(did you mean "timeout"\?\)/);
    expect(() =>
      defineMachine({ name: "M", state, steps: { start: { run: (ctx) => ctx.done(), timeout: "soon" } } }),
    ).toThrowError(/timeout must be a duration/);
    expect(() =>
      defineMachine({ name: "M", state, steps: { start: { run: (ctx) => ctx.done(), maxAttempts: 0 } } }),
    ).toThrowError(/maxAttempts must be an integer from 1/);
  });

  it("rejects bad names", () => {
    expect(() => defineMachine({ name: "", state, steps: { start: (ctx) => ctx.done() } })).toThrowError(ConfigError);
    expect(() => defineMachine({ name: "M", queue: " q", state, steps: { start: (ctx) => ctx.done() } })).toThrowError(
      /queue must be/,
    );
  });
});

describe("defineJob", () => {
  it("builds a one-step machine named perform", () => {
    const job = defineJob({ name: "J", args: z.object({ to: z.string() }), perform: async () => 1 });
    expect(job.kind).toBe("job");
    expect([...job.steps.keys()]).toEqual(["perform"]);
  });
  it("requires perform", () => {
    expect(() => defineJob({ name: "J", args: state } as never)).toThrowError(/perform must be a function/);
  });
});

describe("engine options", () => {
  const M = defineMachine({ name: "M", queue: "q", state, steps: { start: (ctx) => ctx.done() } });
  const url = "postgres://localhost/x";
  it.each([
    [{ connectionString: url, queus: { q: 1 } }, /unknown option "queus" \(did you mean "queues"\?\)/],
    [{}, /connectionString \(or pool\) is required/],
    [{ connectionString: url, schema: "Bad-Name" }, /schema must match/],
    [{ connectionString: url, schema: "x; drop table y" }, /schema must match/],
    [{ connectionString: url, queues: { q: 0 } }, /queues\.q must be a concurrency from 1 to 10000/],
    [
      { connectionString: url, queues: { q: { concurency: 2 } } },
      /unknown option "concurency" \(did you mean "concurrency"\?\)/,
    ],
    [
      { connectionString: url, queues: { other: 1 }, machines: [M] },
      /machine "M" runs on queue "q", which is not in queues \(other\)/,
    ],
    [{ connectionString: url, leaseDuration: "forever" }, /leaseDuration must be a duration/],
    [{ connectionString: url, leaseDuration: 10 }, /leaseDuration must be at least 1000 ms/],
    [{ connectionString: url, machines: [{}] }, /machines\[0\] is an object, not a defineMachine\/defineJob result/],
    [{ connectionString: url, logger: { info() {} } }, /logger must have debug, info, warn and error methods/],
    [{ connectionString: url, maxPayloadBytes: -1 }, /maxPayloadBytes must be an integer/],
  ])("rejects %j", (options, message) => {
    expect(() => new GenDurable(options as never)).toThrowError(ConfigError);
    expect(() => new GenDurable(options as never)).toThrowError(message);
  });
});

describe("durations and backoff", () => {
  it("parses durations", () => {
    expect(parseDuration(250, "d")).toBe(250);
    expect(parseDuration("30s", "d")).toBe(30_000);
    expect(parseDuration("5m", "d")).toBe(300_000);
    expect(parseDuration("2h", "d")).toBe(7_200_000);
    expect(parseDuration("1.5s", "d")).toBe(1500);
    expect(parseDuration("-1s", "d")).toMatch(/must be a duration/);
    expect(parseDuration(NaN, "d")).toMatch(/must be a duration/);
  });
  it("grows exponentially, capped, with jitter within half to all of the delay", () => {
    const fn = resolveBackoff({ type: "exponential", base: "1s", max: "10s", jitter: false }, "b");
    expect([1, 2, 3, 4, 5, 6].map(fn)).toEqual([1000, 2000, 4000, 8000, 10000, 10000]);
    const jittered = resolveBackoff({ type: "exponential", base: "1s", max: "1h", jitter: true }, "b");
    for (let i = 0; i < 100; i++) {
      const d = jittered(3);
      expect(d).toBeGreaterThanOrEqual(2000);
      expect(d).toBeLessThanOrEqual(4000);
    }
    expect(resolveBackoff({ type: "fixed", delay: "3s" }, "b")(7)).toBe(3000);
    expect(resolveBackoff((n) => n * 10, "b")(4)).toBe(40);
    expect(() => resolveBackoff({ type: "linear" } as never, "b")).toThrowError(
      /backoff.type must be "exponential" or "fixed"/,
    );
  });
});

describe("await specs", () => {
  const sig = (id: number, event: string) => ({ id: String(id), event });
  it("matches one, any, all and packs in arrival order", () => {
    const box = [sig(1, "b"), sig(2, "a"), sig(3, "b"), sig(4, "c")];
    expect(matchSpec(normalizeSpec("b", "w"), box)?.map((s) => s.id)).toEqual(["1"]);
    expect(matchSpec(normalizeSpec({ any: ["c", "a"] }, "w"), box)?.map((s) => s.id)).toEqual(["2"]);
    expect(matchSpec(normalizeSpec({ all: ["c", "a"] }, "w"), box)?.map((s) => s.id)).toEqual(["2", "4"]);
    expect(matchSpec(normalizeSpec({ all: ["a", "z"] }, "w"), box)).toBeNull();
    expect(matchSpec(normalizeSpec({ event: "b", count: 2 }, "w"), box)?.map((s) => s.id)).toEqual(["1", "3"]);
    expect(matchSpec(normalizeSpec({ event: "b", count: 3 }, "w"), box)).toBeNull();
  });
  it("rejects malformed specs", () => {
    expect(() => normalizeSpec("" as never, "w")).toThrowError(/event names must be a non-empty string/);
    expect(() => normalizeSpec({ all: [] } as never, "w")).toThrowError(/needs a non-empty array/);
    expect(() => normalizeSpec({ event: "x", count: 0 } as never, "w")).toThrowError(/integer count/);
    expect(() => normalizeSpec(42 as never, "w")).toThrowError(/an await spec is/);
  });
});
