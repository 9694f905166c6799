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
   * Steps of one key's instances that may run at once, on all nodes together (default 1: the key
   * serialises its instances). See docs/concurrency-keys.md.
   */
  limit?: number;
}

/** The largest limit a key may have: the key row lists its holders. */
export const MAX_CONCURRENCY_LIMIT = 100_000;

/** Checks a definition's `concurrency` option. */
export function checkConcurrency(value: unknown, where: string): Required<ConcurrencyOption> | undefined {
  if (value === undefined) return undefined;
  if (typeof value !== "object" || value === null || typeof (value as { key?: unknown }).key !== "function") {
    throw new ConfigError(`${where} must be { key: (input) => string, limit?: number }, got ${describe(value)}`);
  }
  rejectUnknownKeys(value, ["key", "limit"], where, (m) => new ConfigError(m));
  const { key, limit = 1 } = value as ConcurrencyOption;
  if (typeof limit !== "number" || !Number.isInteger(limit) || limit < 1 || limit > MAX_CONCURRENCY_LIMIT) {
    throw new ConfigError(
      `${where}.limit must be an integer from 1 to ${MAX_CONCURRENCY_LIMIT} (steps of one key's instances ` +
        `that may run at once), got ${describe(limit)}`,
    );
  }
  return Object.freeze({ key, limit });
}

/**
 * The limit stored with a new instance of `key`: the definition's, when above 1; null means 1
 * (a key given at the call site of a definition that declares a limit runs under that limit too).
 */
export function concurrencyLimitOf(machine: AnyMachine, key: string | null): number | null {
  const limit = machine.concurrency?.limit ?? 1;
  return key !== null && limit > 1 ? limit : null;
}

/** The error maker of checkKey, made only when a key is checked (a plain insert makes no closure). */
const keyError = (where: string) => (m: string) => new ValidationError(`${where}: ${m}`);

/** The concurrency key of a new instance: the call's own (null: none), else the definition's, else none. */
export function concurrencyKeyOf(
  machine: AnyMachine,
  input: unknown,
  explicit: string | null | undefined,
  where: string,
): string | null {
  if (explicit === null) return null;
  if (explicit !== undefined) return checkKey(explicit, "concurrencyKey", keyError(where));
  if (!machine.concurrency) return null;
  let key: unknown;
  try {
    key = machine.concurrency.key(input);
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    throw new ValidationError(`${where}: the concurrency.key of ${machine.name} threw: ${message}`);
  }
  return checkKey(key, `the key from ${machine.name}'s concurrency.key`, keyError(where));
}
