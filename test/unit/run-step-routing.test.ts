// runStep and the routing facts: ctx.now(), ctx.resumedBy, ctx.failure, ctx.cancellation, ctx.maxAttempts,
// and an error result that says the engine would run the onFailure step next.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, NonRetryableError, ValidationError } from "../../src/index.js";
import { runStep } from "../../src/testing/index.js";

const Transfer = defineMachine({
  name: "Transfer",
  state: z.object({ to: z.string() }),
  onCancel: "cleanup",
  steps: {
    start: {
      maxAttempts: 3,
      onFailure: "refund",
      run: (ctx) => {
        if (ctx.state.to === "nobody") throw new NonRetryableError("no such account");
        return ctx.await("confirmed", "start", ctx.state, {
          until: new Date(ctx.now().getTime() + 60_000),
          onTimeout: "refund",
        });
      },
    },
    refund: (ctx) =>
      ctx.done({ because: ctx.failure?.error.message, after: ctx.failure?.attempts, resumedBy: ctx.resumedBy }),
    cleanup: (ctx) => ctx.done({ reason: ctx.cancellation?.reason, maxAttempts: ctx.maxAttempts }),
  },
});

describe("runStep with routing facts", () => {
  it("reports that a failure routes to onFailure, and gives the onFailure step ctx.failure", async () => {
    const failed = await runStep(Transfer, "start", { state: { to: "nobody" } });
    expect(failed).toMatchObject({ type: "error", willRetry: false, routedTo: "refund" });
    const refund = await runStep(Transfer, "refund", {
      state: { to: "nobody" },
      failure: { error: new NonRetryableError("no such account"), step: "start", attempts: 1 },
      resumedBy: "timeout",
    });
    expect(refund).toEqual({
      type: "done",
      result: { because: "no such account", after: 1, resumedBy: "timeout" },
    });
  });

  it("ctx.now() is the given time, and an until computed from it lands on the deadline", async () => {
    const now = new Date("2030-01-01T00:00:00Z");
    const parked = await runStep(Transfer, "start", { state: { to: "bob" }, now });
    expect(parked).toMatchObject({ type: "await", until: new Date("2030-01-01T00:01:00Z"), onTimeout: "refund" });
  });

  it("gives a cleanup step ctx.cancellation", async () => {
    const cleaned = await runStep(Transfer, "cleanup", { state: { to: "bob" }, cancellation: { reason: "bye" } });
    expect(cleaned).toEqual({ type: "done", result: { reason: "bye", maxAttempts: 20 } });
  });

  it("refuses bad routing inputs", async () => {
    await expect(runStep(Transfer, "refund", { state: { to: "x" }, now: new Date(Number.NaN) })).rejects.toThrow(
      new ValidationError("runStep: now must be a valid Date, got Invalid Date"),
    );
    await expect(
      // @ts-expect-error -- not a way an await ends
      runStep(Transfer, "refund", { state: { to: "x" }, resumedBy: "signals" }),
    ).rejects.toThrow(/resumedBy must be "signal" or "timeout"/);
  });
});
