/**
 * The typed forms of the client API: `engine.signal(Machine, target, event, payload)`
 * and handles for `wait` / `get`. Each resolves to the untyped call plus a check
 * of the payload against the target's machine.
 */
import type { AnyMachine, Machine } from "../define.js";
import { ValidationError } from "../errors.js";
import type { SignalOptions } from "../instance.js";
import type { SignalSchemas } from "../machine-types.js";
import { checkSignal } from "../machine-typing.js";
import type { StandardSchemaV1 } from "../schema.js";

type IsAny<T> = 0 extends 1 & T ? true : false;
type SigOf<M> =
  IsAny<M> extends true
    ? SignalSchemas
    : M extends Machine<StandardSchemaV1, string, "machine" | "job", infer S>
      ? S
      : SignalSchemas;

/** The events a machine declares (any name when it declares none). */
export type SignalName<M> = keyof SigOf<M> & string;

/** The payload (and options) of a typed signal: required unless the schema accepts undefined. */
export type SignalRest<M, E extends string> =
  SigOf<M>[E] extends StandardSchemaV1<infer I>
    ? undefined extends I
      ? [payload?: I, options?: SignalOptions]
      : [payload: I, options?: SignalOptions]
    : [payload?: unknown, options?: SignalOptions];

/**
 * The check of a signal against the machine of the instance it reaches, decided before the signal
 * is sent (delivery is one statement, see sql/signals.ts `deliver`): the machine its target must be
 * an instance of (the typed form), and the machines whose signal schema refuses the payload, each
 * with the error to raise when the target is one of theirs.
 */
export type SignalCheck = () => Promise<{
  machineIs: { name: string; refused: (actual: string) => Error } | null;
  refused: ReadonlyMap<string, unknown>;
}>;

function isMachine(value: unknown): value is AnyMachine {
  return typeof value === "object" && value !== null && (value as { steps?: unknown }).steps instanceof Map;
}

/**
 * Reads the arguments of either form of `engine.signal`. The typed form checks the payload now, and
 * that the target is an instance of that machine; the untyped form checks it against the target's
 * machine when this engine has it registered (otherwise the step that consumes it checks it).
 */
export async function typedSignal(
  args: unknown[],
  machines: ReadonlyMap<string, AnyMachine>,
): Promise<{
  target: string | { id: string };
  event: string;
  payload: unknown;
  options: SignalOptions | undefined;
  check: SignalCheck;
}> {
  if (isMachine(args[0])) {
    const machine = args[0];
    const [, target, event, payload, options] = args as [
      AnyMachine,
      string | { id: string },
      string,
      unknown,
      SignalOptions,
    ];
    if (typeof event === "string") await checkSignal(machine, event, payload, "signal");
    const check: SignalCheck = async () => ({
      machineIs: {
        name: machine.name,
        refused: (actual) =>
          new ValidationError(`signal: the target is an instance of "${actual}", not of "${machine.name}"`),
      },
      refused: new Map(),
    });
    return { target, event, payload, options, check };
  }
  const [target, event, payload, options] = args as [string | { id: string }, string, unknown, SignalOptions];
  // Against every machine this engine has: the target's, when it is one of them, is known only server-side.
  const check: SignalCheck = async () => {
    const refused = new Map<string, unknown>();
    for (const machine of machines.values()) {
      await checkSignal(machine, event, payload, "signal").catch((error: unknown) => refused.set(machine.name, error));
    }
    return { machineIs: null, refused };
  };
  return { target, event, payload, options, check };
}

/** The id of an id or a handle `{ id }` (insert's result); anything else unchanged, for the caller's checks. */
export function idOf(target: unknown): unknown {
  if (typeof target === "object" && target !== null && "id" in target && !("correlationKey" in target)) {
    return (target as { id: unknown }).id;
  }
  return target;
}
