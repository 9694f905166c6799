/**
 * What may be stored: states, args, results and signal payloads are JSON, checked
 * before any write so that a bad value fails loudly and writes nothing; and
 * anything a step throws becomes a bounded, storable error record: a failure
 * path must never fail on data (an error that could not be stored would keep
 * the attempt's failure from being recorded at all).
 */
import { describe } from "./duration.js";
import { ValidationError } from "./errors.js";
import { LONE_SURROGATE } from "./names.js";

/** Deeper values are rejected: JSON.stringify and Postgres' parser both recurse. */
export const MAX_DEPTH = 1000;

/**
 * Checks that `value` is plain JSON that Postgres' jsonb accepts and returns its
 * text. Rejects (with a ValidationError naming `label` and the path) cycles,
 * functions, symbols, BigInt, undefined, non-finite numbers, class instances
 * such as Date or Map, NUL characters, lone UTF-16 surrogates, and text over
 * `maxBytes` UTF-8 bytes, and nesting deeper than MAX_DEPTH. The walk is
 * iterative, so a 10,000-deep value gets an error, not a stack overflow.
 */
export function encodeJson(value: unknown, label: string, maxBytes: number): string {
  return checkJson(value, label, maxBytes).text;
}

/**
 * encodeJson, returning also `value`: a plain copy of what was checked, read
 * once. Store the copy, not the original: a getter, a Proxy or an array's
 * toJSON may answer differently on a second read (a NUL, a BigInt), and what
 * reaches Postgres must be exactly what was checked. A value that cannot even
 * be read (a throwing getter, a revoked Proxy) is a ValidationError too.
 */
export function checkJson(value: unknown, label: string, maxBytes: number): { text: string; value: unknown } {
  const walked = copyJson(value, maxBytes);
  if ("problem" in walked) {
    const { problem } = walked;
    throw new ValidationError(`${label}${problem.path} ${problem.message}`, [
      { message: problem.message, path: problem.keys },
    ]);
  }
  if (walked.atLeast > maxBytes) {
    // Known too big from its strings alone: not worth building text of (say) 100 MB to measure it.
    throw new ValidationError(
      `${label} is at least ${walked.atLeast} bytes of JSON, over the limit of ${maxBytes} bytes (maxPayloadBytes)`,
    );
  }
  const text = JSON.stringify(walked.copy);
  const bytes = Buffer.byteLength(text, "utf8");
  if (bytes > maxBytes) {
    throw new ValidationError(
      `${label} is ${bytes} bytes of JSON, over the limit of ${maxBytes} bytes (maxPayloadBytes)`,
    );
  }
  return { text, value: walked.copy };
}

interface Problem {
  path: string;
  keys: PropertyKey[];
  message: string;
}

interface Frame {
  value: unknown;
  keys: PropertyKey[];
  /** Stores this value's copy in its parent's copy. */
  put: (copy: unknown) => void;
}

/**
 * Walks `root` once, iteratively, and returns a copy made only of plain objects, arrays and
 * primitives (so JSON.stringify of it cannot call user code), or the first problem found.
 * `atLeast` is a lower bound of its UTF-8 size (the length of its strings); the walk stops
 * early once that exceeds `maxBytes`.
 */
function copyJson(root: unknown, maxBytes: number): { copy: unknown; atLeast: number } | { problem: Problem } {
  const result = { copy: undefined as unknown, atLeast: 0 };
  const stack: Frame[] = [{ value: root, keys: [], put: (copy) => (result.copy = copy) }];
  const onPath = new Set<object>();
  const exits: Array<{ object: object; depth: number }> = [];
  while (stack.length > 0) {
    const { value, keys, put } = stack.pop()!;
    // Leave objects whose subtree is done (we are back at a shallower depth).
    while (exits.length > 0 && exits[exits.length - 1]!.depth >= keys.length) onPath.delete(exits.pop()!.object);
    const bad = (message: string) => ({ problem: { path: formatPath(keys), keys, message } });
    switch (typeof value) {
      case "string":
        if (value.includes("\u0000")) return bad("contains a NUL character (\\u0000), which Postgres cannot store");
        if (LONE_SURROGATE.test(value)) return bad("contains a lone UTF-16 surrogate, which is not valid Unicode");
        result.atLeast += value.length;
        if (result.atLeast > maxBytes) return result;
        put(value);
        continue;
      case "number":
        if (!Number.isFinite(value)) return bad(`is ${value}, which is not a JSON number`);
        put(value);
        continue;
      case "boolean":
        put(value);
        continue;
      case "undefined":
        // A state, args or payload of undefined (a schema may accept it) is refused, not turned into null:
        // the step would then see null where its schema promised undefined.
        if (keys.length === 0)
          return bad(
            "is undefined, which cannot be stored (JSON has no undefined): " +
              "pass a value, or null if the schema accepts it",
          );
        if (typeof keys[keys.length - 1] === "number") return bad("is undefined, which is not JSON");
        continue; // an undefined property is simply omitted, as JSON.stringify does
      case "bigint":
      case "function":
      case "symbol":
        return bad(`is ${describe(value)}, which is not JSON`);
    }
    if (value === null) {
      put(null);
      continue;
    }
    if (keys.length >= MAX_DEPTH) return bad(`is nested deeper than ${MAX_DEPTH} levels`);
    const object = value as object;
    if (onPath.has(object)) return bad("is a circular reference");
    // Every read of user data below may run user code (getters, Proxy traps) that throws.
    let children: Array<[PropertyKey, unknown]>;
    let copy: unknown[] | Record<string, unknown>;
    try {
      const proto = Object.getPrototypeOf(object);
      if (Array.isArray(object)) {
        if (proto !== Array.prototype) return bad("is an array with a prototype of its own, not a plain array");
        if (Object.hasOwn(object, "toJSON")) return bad("is an array with its own toJSON, not a plain array");
        // Each element takes a byte at least: a sparse array of a billion holes stops here.
        result.atLeast += object.length;
        if (result.atLeast > maxBytes) return result;
        children = [];
        for (let i = 0; i < object.length; i++) children.push([i, object[i]]);
        copy = new Array(object.length);
      } else {
        if (proto !== Object.prototype && proto !== null) {
          const hint = object instanceof Date ? "; store an ISO string (date.toISOString()) instead" : "";
          return bad(`is ${describe(object)}, not a plain object${hint}`);
        }
        children = Object.entries(object);
        copy = {};
      }
    } catch (error) {
      return bad(`could not be read: ${toErrorRecord(error).message}`);
    }
    put(copy);
    onPath.add(object);
    exits.push({ object, depth: keys.length });
    for (let i = children.length - 1; i >= 0; i--) {
      const [key, child] = children[i]!;
      if (typeof key === "string") {
        if (key.includes("\u0000")) return bad(`has a key containing a NUL character`);
        if (LONE_SURROGATE.test(key)) return bad(`has a key containing a lone UTF-16 surrogate`);
        result.atLeast += key.length;
      }
      const target = copy;
      stack.push({
        value: child,
        keys: [...keys, key],
        // defineProperty: a "__proto__" key stays an own key of the copy and sets no prototype.
        put: Array.isArray(target)
          ? (v) => (target[key as number] = v)
          : (v) =>
              Object.defineProperty(target, key, { value: v, enumerable: true, writable: true, configurable: true }),
      });
    }
  }
  return result;
}

function formatPath(keys: PropertyKey[]): string {
  return keys
    .map((k) =>
      typeof k === "number"
        ? `[${k}]`
        : /^[A-Za-z_$][\w$]*$/.test(String(k))
          ? `.${String(k)}`
          : `[${JSON.stringify(String(k))}]`,
    )
    .join("");
}

/** The stored form of a thrown value. */
export interface ErrorRecord {
  /** The error's `name` ("Error", "TypeError", "Cancelled" for a cancel, …). */
  name: string;
  /** The error's message, cut at 8 KiB. */
  message: string;
  /** The stack trace, cut at 32 KiB, when the thrown value had one. */
  stack?: string;
  /** The error's `code` (as a string), when it had one: Node's `ECONNRESET`, a GenDurableError's code. */
  code?: string;
  /** The error's `cause`, stored the same way (five levels at most). */
  cause?: ErrorRecord;
}

const MAX_MESSAGE = 8 * 1024;
const MAX_STACK = 32 * 1024;
const MAX_CAUSE_DEPTH = 5;

/** Turns anything thrown — strings, null, cyclic objects, Proxies that throw — into a bounded ErrorRecord. */
export function toErrorRecord(thrown: unknown, depth = 0): ErrorRecord {
  const record: ErrorRecord = { name: "Error", message: "" };
  try {
    if (thrown instanceof Error) {
      record.name =
        clean(
          safeGet(() => thrown.name),
          200,
        ) || "Error";
      record.message = clean(
        safeGet(() => thrown.message),
        MAX_MESSAGE,
      );
      const stack = clean(
        safeGet(() => thrown.stack),
        MAX_STACK,
      );
      if (stack) record.stack = stack;
      const code = safeGet(() => (thrown as { code?: unknown }).code);
      if (typeof code === "string" || typeof code === "number") record.code = clean(String(code), 200);
      const cause = safeGet(() => thrown.cause);
      if (cause !== undefined && depth < MAX_CAUSE_DEPTH) record.cause = toErrorRecord(cause, depth + 1);
      if (thrown instanceof AggregateError) {
        const count = safeGet(() => thrown.errors.length);
        if (count) record.message = clean(`${record.message} (${count} errors)`, MAX_MESSAGE);
      }
    } else if (typeof thrown === "string") {
      record.message = clean(thrown, MAX_MESSAGE);
    } else if (thrown !== null && typeof thrown === "object") {
      const message = safeGet(() => (thrown as { message?: unknown }).message);
      record.message = clean(
        typeof message === "string" ? message : (safeGet(() => JSON.stringify(thrown)) ?? describe(thrown)),
        MAX_MESSAGE,
      );
    } else {
      record.message = clean(safeGet(() => String(thrown)) ?? describe(thrown), MAX_MESSAGE);
    }
  } catch {
    record.message = "(the thrown value could not be read)";
  }
  if (!record.message) record.message = `(thrown ${safeGet(() => describe(thrown)) ?? "value"} with no message)`;
  return record;
}

/**
 * What a step (or a schema, or a rate-limit function) threw, as the engine may
 * inspect it: the value itself when the reads the engine makes of it
 * (instanceof, `.code`, `.message`) run no code that throws, else an Error
 * carrying its record. A Proxy with throwing traps or an Error whose getters
 * throw would otherwise break the failure path that records it.
 */
export function safeThrown(thrown: unknown): unknown {
  if (thrown === null || (typeof thrown !== "object" && typeof thrown !== "function")) return thrown;
  try {
    void (thrown instanceof Error);
    void (thrown as { code?: unknown }).code;
    void (thrown as { message?: unknown }).message;
    return thrown;
  } catch {
    const record = toErrorRecord(thrown);
    const error = new Error(record.message);
    error.name = record.name;
    return error;
  }
}

function safeGet<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}

/**
 * A message as it is stored, the same whoever wrote it (a thrown error, a
 * cancel reason): at most 8 KiB, each NUL replaced by the two characters \0,
 * each lone surrogate by U+FFFD.
 */
export function storableMessage(text: string): string {
  return clean(text, MAX_MESSAGE);
}

/** Makes text storable: a string, no NUL, no lone surrogates, at most `max` UTF-16 units. */
function clean(value: unknown, max: number): string {
  if (typeof value !== "string") return "";
  let text = value.length > max ? value.slice(0, max - 1) + "…" : value;
  text = text.replace(/\u0000/g, "\\0");
  return text.replace(new RegExp(LONE_SURROGATE.source, "g"), "\ufffd");
}
