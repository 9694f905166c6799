// A step's abort: its signal is made on first read and then behaves as an AbortController's,
// whenever it is read; invokeStep abandons the step's code when it aborts.
import { describe, expect, it } from "vitest";
import type { ResolvedStep } from "../../src/define.js";
import { StepTimeoutError } from "../../src/errors.js";
import { invokeStep } from "../../src/runtime/invoke.js";
import { StepAbort } from "../../src/runtime/step-abort.js";

const step = (timeoutMs?: number) => ({ name: "work", timeoutMs }) as unknown as ResolvedStep;

describe("StepAbort", () => {
  it("gives a signal that aborts with the reason, read before or after the abort", () => {
    const early = new StepAbort();
    const signal = early.signal;
    const seen: unknown[] = [];
    signal.addEventListener("abort", () => seen.push(signal.reason));
    const reason = new Error("lease lost");
    early.abort(reason);
    expect(seen).toEqual([reason]);
    expect(early.signal).toBe(signal);

    const late = new StepAbort();
    late.abort(reason);
    expect(late.aborted).toBe(true);
    expect(late.signal.aborted).toBe(true);
    expect(late.signal.reason).toBe(reason);
  });

  it("keeps the first reason, and calls its listener once, at once when already aborted", () => {
    const abort = new StepAbort();
    const calls: Error[] = [];
    abort.onAbort((r) => calls.push(r));
    const first = new Error("first");
    abort.abort(first);
    abort.abort(new Error("second"));
    expect(calls).toEqual([first]);
    expect(abort.signal.reason).toBe(first);
    const after: Error[] = [];
    abort.onAbort((r) => after.push(r));
    expect(after).toEqual([first]);
  });

  it("calls no listener that was removed", () => {
    const abort = new StepAbort();
    const calls: Error[] = [];
    const remove = abort.onAbort((r) => calls.push(r));
    remove();
    abort.abort(new Error("late"));
    expect(calls).toEqual([]);
  });
});

describe("invokeStep", () => {
  it("resolves with what the code returns, and rejects with what it throws, at once or later", async () => {
    const given: Array<Promise<void>> = [];
    const onCode = (settled: Promise<void>) => given.push(settled);
    expect(await invokeStep("M", step(), new StepAbort(), () => 42, onCode)).toBe(42);
    await expect(
      invokeStep(
        "M",
        step(),
        new StepAbort(),
        () => {
          throw new Error("boom");
        },
        onCode,
      ),
    ).rejects.toThrow("boom");
    // Settled before invokeStep returned: nothing for onCode to wait for.
    expect(given).toHaveLength(0);
    expect(await invokeStep("M", step(), new StepAbort(), async () => 43, onCode)).toBe(43);
    await expect(
      invokeStep(
        "M",
        step(),
        new StepAbort(),
        async () => {
          throw new Error("later");
        },
        onCode,
      ),
    ).rejects.toThrow("later");
    expect(given).toHaveLength(2);
  });

  it("rejects with the abort's reason when the attempt was aborted before its code ran or returned", async () => {
    const before = new StepAbort();
    const reason = new Error("cancelled first");
    before.abort(reason);
    let ran = false;
    await expect(
      invokeStep("M", step(), before, () => {
        ran = true;
        return 42;
      }),
    ).rejects.toBe(reason);
    // Aborted before it started: its code never ran.
    expect(ran).toBe(false);
    expect(before.reason).toBe(reason);
    const during = new StepAbort();
    await expect(
      invokeStep("M", step(), during, () => {
        during.abort(reason);
        throw new Error("and then threw");
      }),
    ).rejects.toBe(reason);
  });

  it("abandons code that does not settle when the attempt aborts, with the abort's reason", async () => {
    const abort = new StepAbort();
    let settled: Promise<void> | undefined;
    const running = invokeStep(
      "M",
      step(),
      abort,
      () => new Promise(() => {}),
      (s) => (settled = s),
    );
    const reason = new Error("cancelled");
    abort.abort(reason);
    await expect(running).rejects.toBe(reason);
    expect(settled).toBeInstanceOf(Promise);
  });

  it("aborts at the step's timeout with a StepTimeoutError, seen by the step's signal too", async () => {
    const abort = new StepAbort();
    const running = invokeStep("M", step(5), abort, () => new Promise(() => {}));
    await expect(running).rejects.toBeInstanceOf(StepTimeoutError);
    expect(abort.signal.reason).toBeInstanceOf(StepTimeoutError);
  });
});
