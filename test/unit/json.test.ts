import { describe, expect, it } from "vitest";
import { ValidationError } from "../../src/errors.js";
import { describe as describeValue } from "../../src/duration.js";
import { checkJson, encodeJson, safeThrown, toErrorRecord } from "../../src/json.js";

const MAX = 1024 * 1024;

describe("encodeJson", () => {
  it("accepts plain JSON and returns its text", () => {
    expect(encodeJson({ a: [1, "x", null, true], b: { c: 1.5 } }, "state", MAX)).toBe(
      '{"a":[1,"x",null,true],"b":{"c":1.5}}',
    );
    expect(encodeJson({ __proto__: null, constructor: 1 } as unknown, "state", MAX)).toBe('{"constructor":1}');
  });

  const cyclic: Record<string, unknown> = { a: 1 };
  cyclic.self = cyclic;
  it.each([
    ["a NUL character", { name: "a\u0000b" }, /state\.name contains a NUL/],
    ["a lone surrogate", { s: "\ud800" }, /state\.s contains a lone UTF-16 surrogate/],
    ["a cycle", cyclic, /state\.self is a circular reference/],
    ["a BigInt", { n: 1n }, /state\.n is 1n, which is not JSON/],
    ["a function", { f: () => 1 }, /state\.f is a function/],
    ["NaN", { x: [1, NaN] }, /state\.x\[1\] is NaN/],
    ["Infinity", { x: Infinity }, /state\.x is Infinity/],
    ["a Date", { at: new Date(0) }, /state\.at is a Date, not a plain object; store an ISO string/],
    ["a Map", { m: new Map() }, /state\.m is a Map/],
    ["undefined at the top", undefined, /state is undefined/],
    ["undefined in an array", [undefined], /state\[0\] is undefined/],
    ["a symbol", { s: Symbol("x") }, /state\.s is Symbol\(x\)/],
  ])("rejects %s with a ValidationError naming where", (_, value, message) => {
    expect(() => encodeJson(value, "state", MAX)).toThrowError(ValidationError);
    expect(() => encodeJson(value, "state", MAX)).toThrowError(message);
  });

  it("rejects 10,000-deep nesting with an error, not a stack overflow, and accepts 999 levels", () => {
    const nest = (levels: number) => {
      let deep: unknown = 1;
      for (let i = 0; i < levels; i++) deep = { d: deep };
      return deep;
    };
    expect(() => encodeJson(nest(10_000), "state", MAX)).toThrowError(/is nested deeper than 1000 levels/);
    expect(encodeJson(nest(999), "state", MAX).length).toBeGreaterThan(999 * 5);
  });

  it("shares non-cyclic references freely", () => {
    const shared = { x: 1 };
    expect(encodeJson({ a: shared, b: shared, c: [shared, shared] }, "state", MAX)).toContain('"c":[{"x":1},{"x":1}]');
  });

  it("enforces the size cap exactly", () => {
    const at = (n: number) => "x".repeat(n - 2); // JSON string adds two quotes
    expect(() => encodeJson(at(1000), "payload", 1000)).not.toThrow();
    expect(() => encodeJson(at(1001), "payload", 1000)).toThrowError(
      /payload is 1001 bytes of JSON, over the limit of 1000 bytes/,
    );
  });
});

describe("toErrorRecord", () => {
  const cyclic: Record<string, unknown> = {};
  cyclic.me = cyclic;
  const throwingMessage = new Error("x");
  Object.defineProperty(throwingMessage, "message", {
    get: () => {
      throw new Error("boom");
    },
  });
  const proxy = new Proxy(
    {},
    {
      get: () => {
        throw new Error("trap");
      },
      getPrototypeOf: () => {
        throw new Error("trap");
      },
    },
  );
  const causeCycle = new Error("outer");
  (causeCycle as { cause?: unknown }).cause = causeCycle;

  it.each([
    ["undefined", undefined],
    ["null", null],
    ["0", 0],
    ["empty string", ""],
    ["a string", "str"],
    ["a symbol", Symbol("x")],
    ["a bigint", 42n],
    ["an empty object", {}],
    ["{ message: 5 }", { message: 5 }],
    ["a cyclic object", cyclic],
    ["an Error whose message getter throws", throwingMessage],
    ["a Proxy that throws on every access", proxy],
    ["a frozen Error", Object.freeze(new Error("frozen"))],
    [
      "an AggregateError of 1,000 errors",
      new AggregateError(
        Array.from({ length: 1000 }, (_, i) => new Error(`e${i}`)),
        "many",
      ),
    ],
    [
      "an Error with a 10 MB message and a cause cycle",
      Object.assign(new Error("m".repeat(10_000_000)), { cause: causeCycle }),
    ],
  ])("turns %s into a bounded, storable record", (_, thrown) => {
    const record = toErrorRecord(thrown);
    expect(record.message.length).toBeGreaterThan(0);
    expect(record.message.length).toBeLessThanOrEqual(8 * 1024);
    expect((record.stack ?? "").length).toBeLessThanOrEqual(32 * 1024);
    expect(() => encodeJson(record, "error", 1024 * 1024)).not.toThrow();
  });

  it("keeps name, message, code and cause of real errors", () => {
    const error = Object.assign(new TypeError("bad", { cause: new Error("root") }), { code: "E_BAD" });
    expect(toErrorRecord(error)).toMatchObject({
      name: "TypeError",
      message: "bad",
      code: "E_BAD",
      cause: { message: "root" },
    });
  });

  it("replaces NUL and lone surrogates in messages", () => {
    const record = toErrorRecord(new Error("a\u0000b\ud800"));
    expect(record.message).toBe("a\\0b\ufffd");
  });
});

describe("checkJson", () => {
  it("takes a root of null, a boolean or a finite number as it is, and refuses a non-finite one", () => {
    for (const value of [null, true, false, 0, -1.5, Number.MAX_VALUE])
      expect(checkJson(value, "the result", MAX)).toEqual({ text: JSON.stringify(value), value });
    expect(checkJson(-0, "the result", MAX).text).toBe("0");
    for (const value of [NaN, Infinity, -Infinity])
      expect(() => checkJson(value, "the result", MAX)).toThrow(`the result is ${value}, which is not a JSON number`);
    expect(() => checkJson(undefined, "the result", MAX)).toThrow(ValidationError);
    expect(() => checkJson(1n, "the result", MAX)).toThrow(ValidationError);
  });

  it("returns a plain copy read once: a getter's second answer is never stored", () => {
    let reads = 0;
    const fickle = {
      get s() {
        return reads++ === 0 ? "fine" : "a\u0000b";
      },
    };
    const { text, value } = checkJson({ fickle }, "state", MAX);
    expect(reads).toBe(1);
    expect(text).toBe('{"fickle":{"s":"fine"}}');
    expect(value).toEqual({ fickle: { s: "fine" } });
    expect(Object.getOwnPropertyDescriptor((value as { fickle: object }).fickle, "s")?.get).toBeUndefined();
  });

  it("keeps __proto__ as an own key of the copy and sets no prototype", () => {
    const { value } = checkJson(JSON.parse('{"__proto__":{"polluted":1}}'), "state", MAX);
    expect(Object.getPrototypeOf(value)).toBe(Object.prototype);
    expect(Object.hasOwn(value as object, "__proto__")).toBe(true);
    expect(({} as { polluted?: unknown }).polluted).toBeUndefined();
  });

  it("refuses values that cannot be read, and arrays with their own toJSON or prototype", () => {
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    const throwing = {
      get x() {
        throw new Error("boom");
      },
    };
    expect(() => checkJson({ p: proxy }, "state", MAX)).toThrowError(/state\.p could not be read: .*revoked/);
    expect(() => checkJson(throwing, "state", MAX)).toThrowError(/state could not be read: boom/);
    expect(() => checkJson(Object.assign([1], { toJSON: () => 2 }), "state", MAX)).toThrowError(/own toJSON/);
    expect(() => checkJson(Object.setPrototypeOf([1], {}), "state", MAX)).toThrowError(/prototype of its own/);
  });

  it("refuses an oversized string or sparse array from its length, before building any text", () => {
    expect(() => checkJson({ s: "x".repeat(2000) }, "payload", 1000)).toThrowError(
      /payload is at least 2001 bytes of JSON, over the limit of 1000 bytes/,
    );
    expect(() => checkJson(new Array(1e9), "payload", 1000)).toThrowError(/over the limit of 1000 bytes/);
  });
});

describe("safeThrown and describe", () => {
  it("pass inspectable values through and replace ones whose reads throw", () => {
    const error = new Error("plain");
    expect(safeThrown(error)).toBe(error);
    expect(safeThrown("text")).toBe("text");
    const { proxy, revoke } = Proxy.revocable({}, {});
    revoke();
    const replaced = safeThrown(proxy) as Error;
    expect(replaced).toBeInstanceOf(Error);
    expect(replaced.message).toBe("(the thrown value could not be read)");
    expect(describeValue(proxy)).toBe("an object that cannot be read");
  });
});
