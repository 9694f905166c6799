/** Validation through Standard Schema (zod, valibot, arktype, ...): one function, one error shape. */
import type { StandardSchemaV1 } from "@standard-schema/spec";
import { ValidationError } from "./errors.js";

export type { StandardSchemaV1 };

export function isStandardSchema(value: unknown): value is StandardSchemaV1 {
  const std = (value as { "~standard"?: { version?: unknown; validate?: unknown } } | null)?.["~standard"];
  return typeof std === "object" && std !== null && std.version === 1 && typeof std.validate === "function";
}

/** Validates `value`, returning the schema's output or throwing a ValidationError that starts with `label`. */
export async function validate<S extends StandardSchemaV1>(
  schema: S,
  value: unknown,
  label: string,
): Promise<StandardSchemaV1.InferOutput<S>> {
  let result = schema["~standard"].validate(value);
  if (result instanceof Promise) result = await result;
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
  return result.value as StandardSchemaV1.InferOutput<S>;
}
