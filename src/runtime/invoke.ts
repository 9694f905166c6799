/**
 * Runs a step's code under its timeout and its abort signal. The code cannot
 * be killed, but it can be abandoned: on timeout or abort the returned promise
 * rejects with the signal's reason (a StepTimeoutError on timeout) while the
 * code runs on, its result ignored.
 */
import type { ResolvedStep } from "../define.js";
import { StepTimeoutError } from "../errors.js";
import { safeThrown } from "../json.js";
import { setLongTimeout, type LongTimeout } from "../timers.js";

/**
 * Calls `run` (the step's code, `step.run(ctx)` or a wrapper of it) and
 * resolves to what it returns, or rejects with what it throws, unless
 * `controller` aborts first: at `step.timeoutMs` this function aborts it
 * itself. `onCode`, if given, receives a promise that settles (never rejects)
 * when the code itself does, however long after the race it is.
 */
export async function invokeStep(
  machine: string,
  step: ResolvedStep,
  controller: AbortController,
  run: () => unknown,
  onCode?: (settled: Promise<void>) => void,
): Promise<unknown> {
  // A timeout may exceed Node's largest timer ("30d"): setLongTimeout waits in chunks.
  let timer: LongTimeout | undefined;
  const { timeoutMs } = step;
  if (timeoutMs !== undefined) {
    timer = setLongTimeout(() => controller.abort(new StepTimeoutError(machine, step.name, timeoutMs)), timeoutMs);
  }
  const { signal } = controller;
  let onAbort: (() => void) | undefined;
  const aborted = new Promise<never>((_, reject) => {
    onAbort = () => reject(signal.reason);
    if (signal.aborted) onAbort();
    else signal.addEventListener("abort", onAbort, { once: true });
  });
  aborted.catch(() => {});
  try {
    // What the code throws is made safe to inspect here, where it enters the engine.
    const code = Promise.resolve()
      .then(() => run())
      .catch((thrown: unknown) => {
        throw safeThrown(thrown);
      });
    onCode?.(
      code.then(
        () => undefined,
        () => undefined,
      ),
    );
    return await Promise.race([code, aborted]);
  } finally {
    timer?.clear();
    if (onAbort) signal.removeEventListener("abort", onAbort);
  }
}
