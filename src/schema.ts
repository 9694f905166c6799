/** Validation through Standard Schema (zod, valibot, arktype, ...): one function, one error shape. */
import type { StandardSchemaV1 } from "@standard-schema/spec";
import { ValidationError } from "./errors.js";
import { toErrorRecord } from "./json.js";

export type { StandardSchemaV1 };

export function isStandardSchema(value: unknown): value is StandardSchemaV1 {
  const std = (value as { "~standard"?: { version?: unknown; validate?: unknown } } | null)?.["~standard"];
  return typeof std === "object" && std !== null && std.version === 1 && typeof std.validate === "function";
}

/**
 * Validates `value`, returning the schema's output or throwing a ValidationError that starts with `label`.
 * The output comes boxed: an async function that resolved to it would call its `then`, were it a thenable
 * (or read `then` through a Proxy's traps), before anyone could check it.
 */
export async function validate<S extends StandardSchemaV1>(
  schema: S,
  value: unknown,
  label: string,
): Promise<{ value: StandardSchemaV1.InferOutput<S> }> {
  return validateNow(schema, value, label);
}

/**
 * `validate`, without a promise when the schema validates synchronously (as zod, valibot and
 * arktype do): a bulk insert validates a thousand values without a thousand promises. Throws
 * (synchronously or by rejecting) the same ValidationError.
 */
export function validateNow<S extends StandardSchemaV1>(
  schema: S,
  value: unknown,
  label: string,
): { value: StandardSchemaV1.InferOutput<S> } | Promise<{ value: StandardSchemaV1.InferOutput<S> }> {
  let returned: StandardSchemaV1.Result<StandardSchemaV1.InferOutput<S>> | Promise<unknown>;
  try {
    returned = schema["~standard"].validate(value);
  } catch (thrown) {
    throw couldNotValidate(label, thrown);
  }
  if (returned instanceof Promise) {
    return returned.then(
      (settled) => outcome(settled as StandardSchemaV1.Result<StandardSchemaV1.InferOutput<S>>, label),
      (thrown: unknown) => {
        throw couldNotValidate(label, thrown);
      },
    );
  }
  return outcome(returned, label);
}

/**
 * The schema's code threw, reading the value (a throwing getter, a revoked Proxy) or on its own:
 * the value could not be validated, which is bad input, not an engine failure.
 */
function couldNotValidate(label: string, thrown: unknown): ValidationError {
  return new ValidationError(`${label} could not be validated: the schema threw ${toErrorRecord(thrown).message}`);
}

function outcome<T>(settled: StandardSchemaV1.Result<T>, label: string): { value: T } {
  let result: { issues?: ReadonlyArray<StandardSchemaV1.Issue>; value?: T };
  try {
    // Read once, here: the result may carry the value itself (a Proxy whose traps throw).
    result = settled.issues ? { issues: settled.issues } : { value: (settled as { value: T }).value };
  } catch (thrown) {
    throw couldNotValidate(label, thrown);
  }
  if (result.issues) {
    const issues = result.issues.map((issue) => ({
      message: issue.message,
      path: issue.path?.map((p) => (typeof p === "object" ? p.key : p)),
    }));
    const text = issues
      .slice(0, 5)
      .map((i) => (i.path && i.path.length > 0 ? `${i.path.map(String).join(".")}: ${i.message}` : i.message))
      .join("; ");
    const more = issues.length > 5 ? ` (and ${issues.length - 5} more)` : "";
    throw new ValidationError(`${label} is invalid: ${text}${more}`, issues);
  }
  return { value: result.value as T };
}
