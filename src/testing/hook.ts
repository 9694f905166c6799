/**
 * The one way gen-durable/testing reaches into an engine: its `_testing()`
 * hook, which the published types leave out (stripInternal), as they leave out
 * this module's exports.
 */
import type { GenDurable } from "../engine.js";

/** @internal What the engine's `_testing()` returns. */
export type TestingHook = ReturnType<GenDurable["_testing"]>;

/** @internal The engine's hook, or undefined when `target` is not a GenDurable. */
export function testingHook(target: unknown): TestingHook | undefined {
  if (typeof target !== "object" || target === null) return undefined;
  const hook = (target as { _testing?: unknown })._testing;
  return typeof hook === "function" ? (hook as () => TestingHook).call(target) : undefined;
}
