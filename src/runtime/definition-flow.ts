/**
 * Flow control declared on a definition: `concurrency: { key, limit? }` gives
 * every instance a concurrency key computed from its input, wherever it is
 * inserted (insert, insertMany, ctx.spawn, cron); an explicit `concurrencyKey`
 * on the call wins, and `concurrencyKey: null` opts out.
 */
import { describe } from "../duration.js";
import { ConfigError, ValidationError } from "../errors.js";
import type { AnyMachine } from "../define.js";
import { checkKey } from "../names.js";
import { rejectUnknownKeys } from "../suggest.js";

export interface ConcurrencyOption<Input = unknown> {
  /** The key of an instance, from its validated state (a job: its args). */
  key: (input: Input) => string;
  /**
   * Instances of one key whose steps may run at once. Only 1 for now: a key serialises its
   * instances, on every node (docs/concurrency-keys.md).
   */
  limit?: 1;
}

/** Checks a definition's `concurrency` option. */
export function checkConcurrency(value: unknown, where: string): Required<ConcurrencyOption> | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null || typeof (value as { key?: unknown }).key !== "function") {
    throw new ConfigError(`${where} must be { key: (input) => string, limit?: 1 }, got ${describe(value)}`);
  }
  rejectUnknownKeys(value, ["key", "limit"], where, (m) => new ConfigError(m));
  const { key, limit = 1 } = value as ConcurrencyOption;
  if (limit !== 1) {
    throw new ConfigError(
      `${where}.limit must be 1 (a concurrency key runs one step of its instances at a time), got ${describe(limit)}`,
    );
  }
  return Object.freeze({ key, limit });
}

/** The concurrency key of a new instance: the call's own (null: none), else the definition's, else none. */
export function concurrencyKeyOf(
  machine: AnyMachine,
  input: unknown,
  explicit: string | null | undefined,
  where: string,
): string | null {
  const bad = (m: string) => new ValidationError(`${where}: ${m}`);
  if (explicit === null) return null;
  if (explicit !== undefined) return checkKey(explicit, "concurrencyKey", bad);
  if (!machine.concurrency) return null;
  let key: unknown;
  try {
    key = machine.concurrency.key(input);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new ValidationError(`${where}: the concurrency.key of ${machine.name} threw: ${message}`);
  }
  return checkKey(key, `the key from ${machine.name}'s concurrency.key`, bad);
}
