import { describe, expect, it } from "vitest";
import { duration, relative, table, timestamp, truncate } from "../../src/cli/table.js";

describe("duration", () => {
  it("shows milliseconds under a second, then at most two units", () => {
    expect(duration(0)).toBe("0ms");
    expect(duration(850.4)).toBe("850ms");
    expect(duration(999.6)).toBe("1s");
    expect(duration(12_000)).toBe("12s");
    expect(duration(200_000)).toBe("3m 20s");
    expect(duration(2 * 3_600_000 + 5 * 60_000 + 59_000)).toBe("2h 5m");
    expect(duration(3 * 86_400_000 + 4 * 3_600_000)).toBe("3d 4h");
    expect(duration(3_600_000)).toBe("1h");
  });

  it("keeps the sign and shows a dash for what is not a number", () => {
    expect(duration(-1500)).toBe("-1s");
    expect(duration(Number.NaN)).toBe("-");
    expect(duration(Infinity)).toBe("-");
  });
});

describe("relative", () => {
  const now = new Date("2026-01-01T12:00:00Z");
  it("says ago for the past and in for the future", () => {
    expect(relative(new Date(now.getTime() - 250), now)).toBe("250ms ago");
    expect(relative(new Date(now.getTime() - 200_000), now)).toBe("3m 20s ago");
    expect(relative(new Date(now.getTime() + 5_000), now)).toBe("in 5s");
  });

  it("reads pg's infinite timestamps and absent values", () => {
    expect(relative(Infinity, now)).toBe("never");
    expect(relative(-Infinity, now)).toBe("-");
    expect(relative(null, now)).toBe("-");
  });
});

describe("timestamp, truncate and table", () => {
  it("formats to the second in UTC", () => {
    expect(timestamp(new Date("2025-01-31T12:00:05.123Z"))).toBe("2025-01-31 12:00:05Z");
    expect(timestamp(Infinity)).toBe("never");
    expect(timestamp(undefined)).toBe("-");
  });

  it("cuts long text with an ellipsis", () => {
    expect(truncate("abcdef", 6)).toBe("abcdef");
    expect(truncate("abcdefg", 6)).toBe("abcde…");
  });

  it("aligns columns and keeps each cell on one line", () => {
    const lines = table(
      [{ header: "NAME" }, { header: "N", align: "right" }],
      [
        ["a\nb", "7"],
        ["long-name", "12"],
      ],
    );
    expect(lines).toEqual(["NAME        N", "a b         7", "long-name  12"]);
  });
});
