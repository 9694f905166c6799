import { describe, expect, it } from "vitest";
import { sampledPace } from "../../src/loops/scheduler.js";

// A node at concurrency 32: the pace of its starts sizes its claim-ahead buffer and how many steps
// draw their rate-limit tokens before a slot is free.
const concurrency = 32;

describe("sampledPace: the pace of a node's starts", () => {
  it("samples every 100 ms, smoothed with the pace before", () => {
    expect(sampledPace({ pace: 10_000, launches: 500, elapsed: 50, concurrency })).toBeUndefined();
    expect(sampledPace({ pace: 10_000, launches: 2_000, elapsed: 100, concurrency })).toBe(15_000);
  });

  it("takes a sample after an idle spell as the pace", () => {
    expect(sampledPace({ pace: 10_000, launches: 10, elapsed: 1_000, concurrency })).toBe(10);
  });

  it("samples a burst of short steps as soon as the slots have turned over twice, and takes it whole", () => {
    // The first work of a node: waiting out the sample ran its first 100 ms a claim at a time.
    expect(sampledPace({ pace: 0, launches: 64, elapsed: 8, concurrency })).toBe(8_000);
    // After an idle spell left a pace of 10 starts a second.
    expect(sampledPace({ pace: 10, launches: 200, elapsed: 10, concurrency })).toBe(20_000);
  });

  it("leaves longer steps to the full sample: slots not turned over twice, or not above twice the pace", () => {
    expect(sampledPace({ pace: 0, launches: 32, elapsed: 50, concurrency })).toBeUndefined();
    expect(sampledPace({ pace: 0, launches: 63, elapsed: 90, concurrency })).toBeUndefined();
    expect(sampledPace({ pace: 20_000, launches: 300, elapsed: 10, concurrency })).toBeUndefined();
    // Nor before 5 ms, however many started (the first claim's rows all start at once).
    expect(sampledPace({ pace: 0, launches: 64, elapsed: 4, concurrency })).toBeUndefined();
  });
});
