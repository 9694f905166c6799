/** The one way gen-durable/testing reaches into an engine: its `@internal` `_testing()` hook. */
import type { GenDurable } from "../engine.js";

export type TestingHook = ReturnType<GenDurable["_testing"]>;

/** The engine's hook, or undefined when `target` is not a GenDurable. */
export function testingHook(target: unknown): TestingHook | undefined {
  if (typeof target !== "object" || target === null) return undefined;
  const hook = (target as { _testing?: unknown })._testing;
  return typeof hook === "function" ? (hook as () => TestingHook).call(target) : undefined;
}
