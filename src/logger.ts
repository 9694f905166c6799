/**
 * Logging: any pino-style logger (`logger.info(fields, message)`, optionally
 * `logger.child(bindings)`); silent by default. The engine only ever calls it
 * as `(fields, message)`, which pino, bunyan-likes and a four-method object
 * all accept. A logger that throws is the application's bug, never a step's:
 * every call the engine makes is guarded, so logging cannot fail an attempt.
 */
import type { StepLogger } from "./define.js";
import { describe } from "./duration.js";

/** A pino-style logger for the engine option `logger`: pino itself, or any object with these four methods. */
export interface Logger {
  /** A line at debug level: structured `fields`, then the message. */
  debug(fields: object, message?: string): void;
  /** A line at info level: structured `fields`, then the message. */
  info(fields: object, message?: string): void;
  /** A line at warn level: structured `fields`, then the message. */
  warn(fields: object, message?: string): void;
  /** A line at error level: structured `fields`, then the message. */
  error(fields: object, message?: string): void;
  /** pino's `child`: a logger that adds `bindings` to every line. Used for `ctx.log` when present. */
  child?(bindings: Record<string, unknown>): Logger;
}

export const LEVELS = ["debug", "info", "warn", "error"] as const;
export type Level = (typeof LEVELS)[number];

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/**
 * Checks the `logger` option: undefined means silent; anything else must have
 * the four level methods (and `child`, if present, must be a function).
 */
export function resolveLogger(value: unknown, fail: (message: string) => Error): Logger {
  if (value === undefined) return silentLogger;
  if (typeof value !== "object" || value === null) {
    throw fail(`logger must be a pino-style logger with debug, info, warn and error methods, got ${describe(value)}`);
  }
  const candidate = value as Record<string, unknown>;
  for (const level of LEVELS) {
    if (typeof candidate[level] !== "function")
      throw fail(
        `logger must have debug, info, warn and error methods (pino-style); ${level} is ${describe(candidate[level])}`,
      );
  }
  if (candidate.child !== undefined && typeof candidate.child !== "function")
    throw fail(`logger.child must be a function (pino-style) or absent, got ${describe(candidate.child)}`);
  return value === silentLogger ? silentLogger : guardLogger(value as Logger);
}

/** The same logger, with every call (child included) shielded from throws: a broken logger loses lines, not steps. */
export function guardLogger(logger: Logger): Logger {
  const guarded: Logger = {
    debug: shield(logger, "debug"),
    info: shield(logger, "info"),
    warn: shield(logger, "warn"),
    error: shield(logger, "error"),
  };
  if (typeof logger.child === "function") {
    guarded.child = (bindings) => {
      try {
        const child = logger.child!(bindings);
        // A child that is not a logger after all: fall back to binding the fields ourselves.
        if (typeof child === "object" && child !== null && LEVELS.every((l) => typeof child[l] === "function"))
          return guardLogger(child);
      } catch {
        // fall through
      }
      return bindFields(guarded, bindings);
    };
  }
  return guarded;
}

function shield(logger: Logger, level: Level): Logger[Level] {
  return (fields, message) => {
    try {
      if (message === undefined) logger[level](fields);
      else logger[level](fields, message);
    } catch {
      // ignored on purpose: see the module comment
    }
  };
}

/** Without `child`: a logger that merges `bindings` into the fields of every call. */
function bindFields(logger: Logger, bindings: Record<string, unknown>): Logger {
  const at = (level: Level) => (fields: object, message?: string) => logger[level]({ ...bindings, ...fields }, message);
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/**
 * `ctx.log`: bound to the instance. With a `child`-capable logger (pino) the
 * instance facts become the child's bindings, created on the first line the
 * step logs (most steps log nothing, and a pino child costs an allocation and
 * a serialisation of the bindings). Without `child`, the facts are merged into
 * each line's fields. Takes `(message, fields?)` — and, for pino habits,
 * `(fields, message?)` too.
 */
export function stepLogger(logger: Logger, bound: Record<string, unknown>): StepLogger {
  let target: Logger | undefined;
  const bind = () => (target ??= typeof logger.child === "function" ? logger.child(bound) : bindFields(logger, bound));
  const at =
    (level: Level) =>
    (first: unknown, second?: unknown): void => {
      const [message, fields] =
        typeof first === "string" || typeof second === "string" ? order(first, second) : [undefined, first];
      const extra =
        typeof fields === "object" && fields !== null ? fields : fields === undefined ? {} : { value: fields };
      if (message === undefined) bind()[level](extra);
      else bind()[level](extra, message);
    };
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}

/** `(message, fields?)` or pino's `(fields, message)`: returns [message, fields]. */
function order(first: unknown, second: unknown): [string | undefined, unknown] {
  if (typeof first === "string") return [first, second];
  return [second as string, first];
}
