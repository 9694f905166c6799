/**
 * Runs a step's code under its timeout and its abort. The code cannot be
 * killed, but it can be abandoned: on timeout or abort the returned promise
 * rejects with the abort's reason (a StepTimeoutError on timeout) while the
 * code runs on, its result ignored.
 */
import type { ResolvedStep } from "../define.js";
import { StepTimeoutError } from "../errors.js";
import { safeThrown } from "../json.js";
import { setLongTimeout, type LongTimeout } from "../timers.js";
import type { StepAbort } from "./step-abort.js";

/**
 * Calls `run` (the step's code, `step.run(ctx)` or a wrapper of it) and
 * resolves to what it returns, or rejects with what it throws, unless
 * `abort` aborts first: at `step.timeoutMs` this function aborts it
 * itself. `onCode`, if given, receives a promise that settles (never rejects)
 * when the code itself does, however long after the race it is; code that
 * settled before this function returned (it returned a value, or threw) is
 * not given to it. An attempt aborted before the call rejects with the abort's
 * reason without running the code.
 */
export async function invokeStep(
  machine: string,
  step: ResolvedStep,
  abort: StepAbort,
  run: () => unknown,
  onCode?: (settled: Promise<void>) => void,
): Promise<unknown> {
  // Aborted before it started (cancelled, or its lease lost, while it waited for a slot): its code never runs.
  if (abort.reason !== undefined) throw abort.reason;
  // A timeout may exceed Node's largest timer ("30d"): setLongTimeout waits in chunks.
  let timer: LongTimeout | undefined;
  const { timeoutMs } = step;
  if (timeoutMs !== undefined) {
    timer = setLongTimeout(() => abort.abort(new StepTimeoutError(machine, step.name, timeoutMs)), timeoutMs);
  }
  let stopListening = () => {};
  try {
    // What the code throws is made safe to inspect here, where it enters the engine.
    let code: Promise<unknown>;
    try {
      const returned = run();
      if (!isThenable(returned)) {
        // Settled already: nothing to race, unless the attempt was aborted before it returned.
        if (!abort.aborted) return returned;
        code = Promise.resolve(returned);
      } else {
        code = Promise.resolve(returned).catch((thrown: unknown) => {
          throw safeThrown(thrown);
        });
        onCode?.(
          code.then(
            () => undefined,
            () => undefined,
          ),
        );
      }
    } catch (thrown) {
      if (!abort.aborted) throw safeThrown(thrown);
      code = Promise.reject(safeThrown(thrown));
      code.catch(() => {});
    }
    // The code's outcome, or the abort's reason if that comes first.
    return await new Promise((resolve, reject) => {
      stopListening = abort.onAbort(reject);
      code.then(resolve, reject);
    });
  } finally {
    timer?.clear();
    stopListening();
  }
}

/** A promise, or anything else with a `then` method (awaiting it would call that). */
function isThenable(value: unknown): value is PromiseLike<unknown> {
  return (
    value !== null &&
    (typeof value === "object" || typeof value === "function") &&
    typeof (value as { then?: unknown }).then === "function"
  );
}
