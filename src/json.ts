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

/** An object or array being copied: its children are visited in order, one at a time. */
interface Level {
  /** The original (on the path while its subtree is walked: a cycle comes back to it). */
  object: object;
  copy: unknown[] | Record<string, unknown>;
  /** Its own keys, in order; null for an array (the keys are the indices). */
  keys: string[] | null;
  /** Its children, read once, in the order of `keys`. */
  values: unknown[];
  /** The next child to visit. */
  next: number;
  /** Its key in its parent (undefined for the root). */
  key: PropertyKey | undefined;
}

/** What `visit` made of a value, besides a problem (its text). */
const COPIED = 0; // the copy is in walk.out (a primitive, or a new Level's copy, already on walk.levels)
const OMITTED = 1; // an undefined property: left out, as JSON.stringify does
const TOO_BIG = 2; // the strings alone are over maxBytes: stop
/** Where a visited value sits: the root, an array element or an object property. */
const ROOT = 0;
const ELEMENT = 1;
const PROPERTY = 2;

interface Walk {
  maxBytes: number;
  atLeast: number;
  out: unknown;
  /** The objects and arrays from the root down to the one whose children are being visited. */
  levels: Level[];
  onPath: Set<object>;
}

/**
 * Walks `root` once, iteratively, and returns a copy made only of plain objects, arrays and
 * primitives (so JSON.stringify of it cannot call user code), or the first problem found.
 * `atLeast` is a lower bound of its UTF-8 size (the length of its strings); the walk stops
 * early once that exceeds `maxBytes`. Only objects and arrays take a frame (a Level): a
 * primitive is checked and copied where it is met.
 */
function copyJson(root: unknown, maxBytes: number): { copy: unknown; atLeast: number } | { problem: Problem } {
  // null, a boolean or a finite number (a job's usual result) is its own copy: no walk to set up.
  if (root === null || typeof root === "boolean" || (typeof root === "number" && Number.isFinite(root)))
    return { copy: root, atLeast: 0 };
  const walk: Walk = { maxBytes, atLeast: 0, out: undefined, levels: [], onPath: new Set() };
  const first = visit(walk, root, ROOT, undefined);
  if (typeof first === "string") return { problem: problemAt(walk.levels, [], first) };
  const copy = walk.out;
  if (first === TOO_BIG) return { copy, atLeast: walk.atLeast };
  const { levels } = walk;
  while (levels.length > 0) {
    const level = levels[levels.length - 1]!;
    if (level.next === level.values.length) {
      levels.pop();
      walk.onPath.delete(level.object);
      continue;
    }
    const i = level.next++;
    const key = level.keys === null ? i : level.keys[i]!;
    const outcome = visit(walk, level.values[i], level.keys === null ? ELEMENT : PROPERTY, key);
    if (typeof outcome === "string") return { problem: problemAt(levels, [key], outcome) };
    if (outcome === TOO_BIG) return { copy, atLeast: walk.atLeast };
    if (outcome === OMITTED) continue;
    if (level.keys === null) (level.copy as unknown[])[i] = walk.out;
    // defineProperty: a "__proto__" key stays an own key of the copy and sets no prototype.
    else
      Object.defineProperty(level.copy, key, { value: walk.out, enumerable: true, writable: true, configurable: true });
  }
  return { copy, atLeast: walk.atLeast };
}

/** The problem of the value at `tail` below the levels on the stack (the root's level has no key). */
function problemAt(levels: readonly Level[], tail: PropertyKey[], message: string): Problem {
  const keys: PropertyKey[] = [];
  for (let i = 1; i < levels.length; i++) keys.push(levels[i]!.key!);
  keys.push(...tail);
  return { path: formatPath(keys), keys, message };
}

/**
 * Checks one value and copies it into walk.out; an object or array also gets its Level pushed
 * (its children are visited later, by the loop). Returns a problem's text, or what it did.
 */
function visit(walk: Walk, value: unknown, where: number, key: PropertyKey | undefined): string | number {
  switch (typeof value) {
    case "string":
      if (value.includes("\u0000")) return "contains a NUL character (\\u0000), which Postgres cannot store";
      if (LONE_SURROGATE.test(value)) return "contains a lone UTF-16 surrogate, which is not valid Unicode";
      walk.atLeast += value.length;
      if (walk.atLeast > walk.maxBytes) return TOO_BIG;
      walk.out = value;
      return COPIED;
    case "number":
      if (!Number.isFinite(value)) return `is ${value}, which is not a JSON number`;
      walk.out = value;
      return COPIED;
    case "boolean":
      walk.out = value;
      return COPIED;
    case "undefined":
      // A state, args or payload of undefined (a schema may accept it) is refused, not turned into null:
      // the step would then see null where its schema promised undefined.
      if (where === ROOT)
        return (
          "is undefined, which cannot be stored (JSON has no undefined): " +
          "pass a value, or null if the schema accepts it"
        );
      if (where === ELEMENT) return "is undefined, which is not JSON";
      return OMITTED; // an undefined property is simply omitted, as JSON.stringify does
    case "bigint":
    case "function":
    case "symbol":
      return `is ${describe(value)}, which is not JSON`;
  }
  if (value === null) {
    walk.out = null;
    return COPIED;
  }
  if (walk.levels.length >= MAX_DEPTH) return `is nested deeper than ${MAX_DEPTH} levels`;
  const object = value as object;
  if (walk.onPath.has(object)) return "is a circular reference";
  // Every read of user data below may run user code (getters, Proxy traps) that throws.
  let level: Level;
  try {
    const proto = Object.getPrototypeOf(object);
    if (Array.isArray(object)) {
      if (proto !== Array.prototype) return "is an array with a prototype of its own, not a plain array";
      if (Object.hasOwn(object, "toJSON")) return "is an array with its own toJSON, not a plain array";
      // Each element takes a byte at least: a sparse array of a billion holes stops here.
      walk.atLeast += object.length;
      if (walk.atLeast > walk.maxBytes) return TOO_BIG;
      const values: unknown[] = new Array(object.length);
      for (let i = 0; i < object.length; i++) values[i] = (object as unknown[])[i];
      level = { object, copy: new Array(object.length), keys: null, values, next: 0, key };
    } else {
      if (proto !== Object.prototype && proto !== null) {
        const hint = object instanceof Date ? "; store an ISO string (date.toISOString()) instead" : "";
        return `is ${describe(object)}, not a plain object${hint}`;
      }
      const entries = Object.entries(object);
      const keys: string[] = new Array(entries.length);
      const values: unknown[] = new Array(entries.length);
      for (let i = 0; i < entries.length; i++) [keys[i], values[i]] = entries[i]!;
      level = { object, copy: {}, keys, values, next: 0, key };
    }
  } catch (error) {
    return `could not be read: ${toErrorRecord(error).message}`;
  }
  if (level.keys !== null) {
    for (const k of level.keys) {
      if (k.includes("\u0000")) return "has a key containing a NUL character";
      if (LONE_SURROGATE.test(k)) return "has a key containing a lone UTF-16 surrogate";
      walk.atLeast += k.length;
    }
  }
  walk.out = level.copy;
  walk.onPath.add(object);
  walk.levels.push(level);
  return COPIED;
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
