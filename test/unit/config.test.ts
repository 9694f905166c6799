// The engine options of src/config.ts against the table that documents them in docs/configuration.md.
import { readFileSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { DEFAULTS, OPTION_KEYS, OPTIONS, resolveConfig } from "../../src/config.js";

/** The rows of the engine options table: option name and default cell. */
function documentedOptions(): Map<string, string> {
  const text = readFileSync(new URL("../../docs/configuration.md", import.meta.url), "utf8");
  const section = text.slice(text.indexOf("## Engine: `new GenDurable(options)`"));
  const rows = new Map<string, string>();
  for (const line of section.slice(0, section.indexOf("\n\n", section.indexOf("| option |"))).split("\n")) {
    const cells = /^\| `(\w+)` \| .*? \| (.*?) \| /.exec(line);
    if (cells) rows.set(cells[1]!, cells[2]!);
  }
  return rows;
}

describe("engine options", () => {
  it("docs/configuration.md documents every option, and no other", () => {
    expect([...documentedOptions().keys()].sort()).toEqual([...OPTION_KEYS].sort());
  });

  it("docs/configuration.md shows each default", () => {
    const documented = documentedOptions();
    for (const [key, value] of Object.entries(DEFAULTS)) {
      expect(documented.get(key), key).toMatch(new RegExp(`^\`${JSON.stringify(value)}\``));
    }
  });

  it("applies the defaults and the bounds of the table", () => {
    const config = resolveConfig({ connectionString: "postgres://localhost/x" });
    expect(config.leaseMs).toBe(30_000);
    expect(config.retentionMs).toBe(7 * 86_400_000);
    expect(config.maxPayloadBytes).toBe(1024 * 1024);
    expect(config.schema).toBe(DEFAULTS.schema);
    for (const [key, spec] of Object.entries(OPTIONS)) {
      if (spec.kind === "duration") {
        if (spec.min > 0)
          expect(
            () => resolveConfig({ connectionString: "postgres://localhost/x", [key]: spec.min - 1 }),
            key,
          ).toThrowError(`${key} must be at least`);
        const max = "max" in spec ? spec.max : undefined;
        if (max)
          expect(
            () => resolveConfig({ connectionString: "postgres://localhost/x", [key]: max.ms + 1 }),
            key,
          ).toThrowError(`${key} must be at most`);
      }
      if (spec.kind === "integer") {
        expect(
          () => resolveConfig({ connectionString: "postgres://localhost/x", [key]: spec.max + 1 }),
          key,
        ).toThrowError(`${key} must be an integer from ${spec.min} to ${spec.max}`);
        expect(
          () => resolveConfig({ connectionString: "postgres://localhost/x", [key]: spec.min - 1 }),
          key,
        ).toThrowError(`${key} must be an integer from ${spec.min} to ${spec.max}`);
      }
    }
  });
});
