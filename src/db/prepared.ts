/**
 * Named prepared statements for the hot path. pg prepares a named statement
 * once per connection and then only binds values, which skips parsing and
 * planning of our multi-CTE statements on every claim, commit and insert.
 */
import { createHash } from "node:crypto";
import type { QueryConfig } from "pg";

const names = new Map<string, string>();

export function prepared(text: string, values: unknown[]): QueryConfig {
  let name = names.get(text);
  if (name === undefined) {
    name = `gd_${createHash("sha1").update(text).digest("hex").slice(0, 16)}`;
    names.set(text, name);
  }
  return { name, text, values };
}
