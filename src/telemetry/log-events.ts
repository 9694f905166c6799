/**
 * Log lines derived from engine events, for an application that passed a
 * `logger`: step starts and stops at debug, failed attempts at warn, failed
 * instances at error. Lease losses and engine errors are logged where they
 * happen (executor, engine), so they are not repeated here. With the default
 * silent logger nothing subscribes, and steps pay nothing.
 */
import type { TypedEmitter } from "../events.js";
import type { Logger } from "../logger.js";

/** Subscribes; returns the function that unsubscribes. */
export function logEvents(events: TypedEmitter, logger: Logger): () => void {
  const offs = [
    events.on("step:start", (e) =>
      logger.debug({ ...e }, `step ${e.machine}.${e.step} started (attempt ${e.attempt})`),
    ),
    events.on("step:stop", (e) => logger.debug({ ...e }, `step ${e.machine}.${e.step} committed: ${e.outcome}`)),
    events.on("step:exception", ({ error, ...facts }) =>
      logger.warn(
        { ...facts, err: error },
        `step ${facts.machine}.${facts.step} failed attempt ${facts.attempt}: ${error.message}` +
          (facts.willRetry ? "; it will be retried" : "; no attempts left"),
      ),
    ),
    events.on("instance:failed", (e) =>
      logger.error(
        { id: e.id, machine: e.machine, err: e.error },
        `instance ${e.id} of ${e.machine} failed: ${e.error.message}`,
      ),
    ),
  ];
  return () => {
    for (const off of offs) off();
  };
}
