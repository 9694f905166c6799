/**
 * What aborts one attempt of a step (its lease lost, its timeout, a cancel, the engine's stop) and
 * what the step's code sees of it (`ctx.abortSignal`). An AbortController per step, and the
 * listener that abandons the step when it aborts, cost every step a few allocations and an
 * EventTarget's bookkeeping, while most steps never read their signal: the controller is made when
 * the signal is first read, already aborted if the step was, and the engine's own listener is a
 * plain callback.
 */
export class StepAbort {
  #controller: AbortController | undefined;
  #reason: Error | undefined;
  #listener: ((reason: Error) => void) | undefined;

  get aborted(): boolean {
    return this.#reason !== undefined;
  }

  /** Why the attempt was aborted (the first reason given); undefined while it was not. */
  get reason(): Error | undefined {
    return this.#reason;
  }

  /** The AbortSignal the step's code sees (made on first read). */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (this.#reason !== undefined) this.#controller.abort(this.#reason);
    }
    return this.#controller.signal;
  }

  /** Aborts the attempt with `reason`; later calls change nothing, as with an AbortController. */
  abort(reason: Error): void {
    if (this.#reason !== undefined) return;
    this.#reason = reason;
    this.#controller?.abort(reason);
    this.#listener?.(reason);
  }

  /**
   * Calls `listener` once when the attempt aborts, at once if it has already; returns what removes
   * it. One listener at a time: the engine's, which abandons the step's code (invokeStep).
   */
  onAbort(listener: (reason: Error) => void): () => void {
    if (this.#reason !== undefined) {
      listener(this.#reason);
      return () => {};
    }
    this.#listener = listener;
    return () => {
      if (this.#listener === listener) this.#listener = undefined;
    };
  }
}
