// Compile-time contract: onFailure and onCancel name steps of the machine; the routing and clock facts on ctx.
import { expectTypeOf } from "vitest";
import { z } from "zod";
import {
  defineJob,
  defineMachine,
  NonRetryableError,
  type ErrorRecord,
  type StepCancellation,
  type StepFailure,
} from "../../src/index.js";

class Declined extends Error {}

defineMachine({
  name: "Transfer",
  state: z.object({ amount: z.number() }),
  onFailure: "refund",
  onCancel: "cleanup",
  retry: { nonRetryable: [Declined, TypeError] },
  steps: {
    start: {
      onFailure: "refund",
      maxAttempts: 3,
      run: (ctx) => {
        expectTypeOf(ctx.maxAttempts).toEqualTypeOf<number>();
        expectTypeOf(ctx.now()).toEqualTypeOf<Date>();
        expectTypeOf(ctx.resumedBy).toEqualTypeOf<"signal" | "timeout" | undefined>();
        if (ctx.state.amount < 0) throw new NonRetryableError("negative amount");
        return ctx.await("confirmed", "done", ctx.state, { until: ctx.now(), onTimeout: "refund" });
      },
    },
    done: (ctx) => ctx.done(),
    refund: (ctx) => {
      expectTypeOf(ctx.failure).toEqualTypeOf<StepFailure | undefined>();
      expectTypeOf(ctx.failure!.error).toEqualTypeOf<ErrorRecord>();
      return ctx.done({ refunded: ctx.failure?.step });
    },
    cleanup: (ctx) => {
      expectTypeOf(ctx.cancellation).toEqualTypeOf<StepCancellation | undefined>();
      return ctx.done();
    },
  },
});

defineMachine({
  name: "Typos",
  state: z.object({}),
  // @ts-expect-error "refnd" is not a step
  onFailure: "refnd",
  // @ts-expect-error "clean" is not a step
  onCancel: "clean",
  steps: {
    start: {
      // @ts-expect-error a step's onFailure is a step name too
      onFailure: "nowhere",
      run: (ctx) => ctx.done(),
    },
    refund: (ctx) => ctx.done(),
  },
});

defineMachine({
  name: "Until",
  state: z.object({}),
  steps: {
    // @ts-expect-error until is a Date or a string
    start: (ctx) => ctx.await("x", "start", undefined, { until: 5, onTimeout: "start" }),
  },
});

defineJob({
  name: "Job",
  args: z.object({}),
  retry: { nonRetryable: [RangeError] },
  perform: () => null,
});
