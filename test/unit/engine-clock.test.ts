// The engine's clock from readings of the database's: each reading says the database read its clock
// somewhere within a statement's round trip. A wake-up for a time by the database's clock must not
// fire before that clock can have reached it, however the reading's round trip fell.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { EngineClock } from "../../src/runtime/clock.js";

const T0 = Date.parse("2026-12-07T08:00:00Z");

beforeEach(() => {
  vi.useFakeTimers({ toFake: ["Date", "performance"], now: T0 });
});
afterEach(() => {
  vi.useRealTimers();
});

/** A reading whose statement went out `roundTripMs` ago and came back now; the database read `databaseMs`. */
function read(clock: EngineClock, databaseMs: number, roundTripMs: number): void {
  clock.observe(databaseMs, Date.now() - roundTripMs, Date.now());
}

describe("EngineClock", () => {
  it("waits out the whole round trip of its only reading", () => {
    const clock = new EngineClock();
    // The database read its clock at the end of a 400 ms round trip: it is 5,000 ms ahead.
    read(clock, T0 + 5_000, 400);
    // The middle is assumed: 5,200 ms ahead, give or take 200.
    expect(clock.offsetMs).toBe(5_200);
    // The database's clock reaches T0 + 5,100 in 100 ms if the database read its clock at the end,
    // as it did here; a wake-up reckoned from the middle alone would fire at once.
    const wait = clock.msUntil(T0 + 5_100);
    expect(wait).toBeGreaterThanOrEqual(100);
    expect(wait).toBeLessThanOrEqual(102);
  });

  it("takes this process's clock as exact before its first reading", () => {
    vi.advanceTimersByTime(3_600_000); // an hour of uptime adds no drift to a clock never read
    expect(new EngineClock().msUntil(Date.now() + 100)).toBe(101);
  });

  it("says 0 for a time the database's clock has surely passed", () => {
    const clock = new EngineClock();
    read(clock, T0, 10); // 5 ms ahead, give or take 5: at least 0
    expect(clock.msUntil(T0 - 1)).toBe(0);
    expect(clock.msUntil(T0 + 100)).toBe(101);
  });

  it("keeps what an earlier narrow reading allows when a wide one agrees with it", () => {
    const clock = new EngineClock();
    read(clock, T0 + 5_000, 2); // 5,001 ± 1
    vi.advanceTimersByTime(10_000);
    read(clock, Date.now() + 5_000, 400); // 5,200 ± 200: agrees
    // 5,000 to 5,002, 1 ms wider each way after 10 s of drift, and 5,000 to 5,400: 5,000 to 5,003.
    expect(clock.offsetMs).toBe(5_001.5);
    // From the earliest the offset allows (5,000), rounded up, and a timer's early millisecond.
    expect(clock.msUntil(Date.now() + 5_100)).toBe(101);
  });

  it("drops earlier readings that a newer one contradicts (a clock stepped since)", () => {
    const clock = new EngineClock();
    read(clock, T0 + 5_000, 2);
    vi.advanceTimersByTime(10_000);
    read(clock, Date.now() - 60_000, 2); // the node's clock was stepped a minute forward
    expect(clock.offsetMs).toBe(-59_999);
    vi.advanceTimersByTime(10_000);
    // Agrees with the reading after the step (-60,001 to -59,997 by now), which alone narrows it.
    read(clock, Date.now() - 60_000, 400);
    expect(clock.offsetMs).toBe(-59_998.5);
  });

  it("widens an old reading's error by the drift two clocks may have since", () => {
    const clock = new EngineClock();
    read(clock, T0, 0);
    expect(clock.msUntil(T0 + 100)).toBe(101);
    vi.advanceTimersByTime(600_000);
    // Ten minutes on, the clocks may have drifted 60 ms apart (100 ppm) either way.
    expect(clock.msUntil(Date.now() + 100)).toBe(161);
  });
});
