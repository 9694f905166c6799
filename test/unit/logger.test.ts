// The logger adapter: option checks, the throw guard, and ctx.log's binding to the instance.
import { describe, expect, it } from "vitest";
import { guardLogger, resolveLogger, silentLogger, stepLogger, type Logger } from "../../src/logger.js";

type Call = [level: string, fields: unknown, message: string | undefined, bindings: Record<string, unknown>];

function recorder(withChild: boolean) {
  const calls: Call[] = [];
  const childCalls: Array<Record<string, unknown>> = [];
  const make = (bindings: Record<string, unknown>): Logger => {
    const at = (level: string) => (fields: object, message?: string) =>
      void calls.push([level, fields, message, bindings]);
    const logger: Logger = { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
    if (withChild) {
      logger.child = (more) => {
        childCalls.push(more);
        return make({ ...bindings, ...more });
      };
    }
    return logger;
  };
  return { logger: make({}), calls, childCalls };
}

const fail = (m: string) => new Error(`GenDurable: ${m}`);
const facts = { id: "7", machine: "Checkout", step: "ship", attempt: 2 };

describe("resolveLogger", () => {
  it("is silent by default", () => {
    expect(resolveLogger(undefined, fail)).toBe(silentLogger);
  });

  it("names what is wrong with a logger that is not pino-style", () => {
    expect(() => resolveLogger(null, fail)).toThrow(
      "GenDurable: logger must be a pino-style logger with debug, info, warn and error methods, got null",
    );
    expect(() => resolveLogger("debug", fail)).toThrow(/got "debug"/);
    expect(() => resolveLogger({ debug() {}, info() {}, warn: 1, error() {} }, fail)).toThrow(
      "GenDurable: logger must have debug, info, warn and error methods (pino-style); warn is 1",
    );
    expect(() => resolveLogger({ debug() {}, info() {}, warn() {}, error() {}, child: {} }, fail)).toThrow(
      "GenDurable: logger.child must be a function (pino-style) or absent, got an object",
    );
  });

  it("accepts a pino-style object and calls through to it", () => {
    const { logger, calls } = recorder(false);
    resolveLogger(logger, fail).warn({ a: 1 }, "hi");
    expect(calls).toEqual([["warn", { a: 1 }, "hi", {}]]);
  });
});

describe("guardLogger", () => {
  it("swallows throws from every level and from child()", () => {
    const boom = () => {
      throw new Error("boom");
    };
    const guarded = guardLogger({ debug: boom, info: boom, warn: boom, error: boom, child: boom });
    expect(() => guarded.error({}, "x")).not.toThrow();
    const child = guarded.child!({ id: "1" });
    expect(() => child.info({}, "y")).not.toThrow();
  });

  it("without a message, calls the logger with the fields only (pino's (obj) form)", () => {
    const { logger, calls } = recorder(false);
    guardLogger(logger).info({ a: 1 });
    expect(calls[0]).toEqual(["info", { a: 1 }, undefined, {}]);
  });

  it("falls back to merging the bindings when child() does not return a logger", () => {
    const { logger, calls } = recorder(false);
    const odd = { ...logger, child: () => ({}) as Logger };
    guardLogger(odd).child!({ id: "1" }).info({ a: 2 }, "m");
    expect(calls).toEqual([["info", { id: "1", a: 2 }, "m", {}]]);
  });
});

describe("stepLogger (ctx.log)", () => {
  it("binds the instance through child(), created lazily on the first line", () => {
    const { logger, calls, childCalls } = recorder(true);
    const log = stepLogger(logger, facts);
    expect(childCalls).toEqual([]); // a step that logs nothing costs no child
    log.info("shipped", { parcel: "p1" });
    log.debug("again");
    expect(childCalls).toEqual([facts]);
    expect(calls).toEqual([
      ["info", { parcel: "p1" }, "shipped", facts],
      ["debug", {}, "again", facts],
    ]);
  });

  it("merges the instance facts into each line's fields when there is no child()", () => {
    const { logger, calls } = recorder(false);
    stepLogger(logger, facts).error("failed", { code: 3 });
    expect(calls).toEqual([["error", { ...facts, code: 3 }, "failed", {}]]);
  });

  it("takes pino's (fields, message) order as well as (message, fields)", () => {
    const { logger, calls } = recorder(true);
    const log = stepLogger(logger, facts) as unknown as { warn(a: unknown, b?: unknown): void };
    log.warn({ retry: true }, "slow");
    log.warn({ only: "fields" });
    log.warn("text", "not an object");
    expect(calls).toEqual([
      ["warn", { retry: true }, "slow", facts],
      ["warn", { only: "fields" }, undefined, facts],
      ["warn", { value: "not an object" }, "text", facts],
    ]);
  });
});
