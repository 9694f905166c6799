import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { MAX_TIMER_MS, setLongTimeout } from "../../src/timers.js";

const DAY = 86_400_000;

describe("setLongTimeout", () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it("fires a 30-day timeout after 30 days, not before (setTimeout would fire it after 1 ms)", () => {
    const fired = vi.fn();
    const naive = vi.fn();
    setLongTimeout(fired, 30 * DAY);
    // The fake clock clamps as Node does: this is the bug the helper exists for.
    setTimeout(naive, 30 * DAY);
    vi.advanceTimersByTime(1);
    expect(naive).toHaveBeenCalledTimes(1);
    expect(fired).not.toHaveBeenCalled();
    vi.advanceTimersByTime(MAX_TIMER_MS);
    expect(fired).not.toHaveBeenCalled();
    vi.advanceTimersByTime(30 * DAY - MAX_TIMER_MS - 2);
    expect(fired).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(fired).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(100 * DAY);
    expect(fired).toHaveBeenCalledTimes(1);
  });

  it("fires short timeouts like setTimeout, and a delay of exactly the largest timer in one piece", () => {
    const short = vi.fn();
    const largest = vi.fn();
    setLongTimeout(short, 250);
    setLongTimeout(largest, MAX_TIMER_MS);
    vi.advanceTimersByTime(249);
    expect(short).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(short).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(MAX_TIMER_MS - 251);
    expect(largest).not.toHaveBeenCalled();
    vi.advanceTimersByTime(1);
    expect(largest).toHaveBeenCalledTimes(1);
  });

  it("clear() cancels it in any chunk", () => {
    const first = vi.fn();
    const later = vi.fn();
    const a = setLongTimeout(first, 60 * DAY);
    const b = setLongTimeout(later, 60 * DAY);
    a.clear();
    vi.advanceTimersByTime(40 * DAY);
    b.clear();
    vi.advanceTimersByTime(40 * DAY);
    expect(first).not.toHaveBeenCalled();
    expect(later).not.toHaveBeenCalled();
    expect(vi.getTimerCount()).toBe(0);
  });

  it("treats a negative or NaN delay as 0 and an infinite one as never", () => {
    const now = vi.fn();
    const nan = vi.fn();
    const never = vi.fn();
    setLongTimeout(now, -5);
    setLongTimeout(nan, Number.NaN);
    setLongTimeout(never, Infinity);
    vi.advanceTimersByTime(1);
    expect(now).toHaveBeenCalledTimes(1);
    expect(nan).toHaveBeenCalledTimes(1);
    vi.advanceTimersByTime(1000 * 365 * DAY);
    expect(never).not.toHaveBeenCalled();
  });

  it("unref: every chunk is unref'd, so a long timer does not keep the process alive", () => {
    const unref = vi.spyOn(globalThis, "setTimeout");
    const timer = setLongTimeout(() => {}, 60 * DAY, { unref: true });
    vi.advanceTimersByTime(MAX_TIMER_MS + 1);
    const handles = unref.mock.results.map((r) => r.value as NodeJS.Timeout);
    expect(handles.length).toBeGreaterThanOrEqual(2);
    for (const handle of handles) expect(handle.hasRef()).toBe(false);
    timer.clear();
    unref.mockRestore();
  });
});
