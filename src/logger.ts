/** Logging: any pino-style logger (`logger.info(fields, message)`); silent by default. */
import type { StepLogger } from "./define.js";

export interface Logger {
  debug(fields: object, message?: string): void;
  info(fields: object, message?: string): void;
  warn(fields: object, message?: string): void;
  error(fields: object, message?: string): void;
}

export const silentLogger: Logger = { debug() {}, info() {}, warn() {}, error() {} };

/** `ctx.log`: message first, fields bound to the instance. */
export function stepLogger(logger: Logger, bound: Record<string, unknown>): StepLogger {
  const at = (level: keyof Logger) => (message: string, fields?: Record<string, unknown>) => logger[level]({ ...bound, ...fields }, message);
  return { debug: at("debug"), info: at("info"), warn: at("warn"), error: at("error") };
}
