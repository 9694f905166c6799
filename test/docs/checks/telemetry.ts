// Checks of docs/telemetry.md, appended to its examples by test/docs/docs.test.ts.
import assert from "node:assert/strict";

assert.equal(doneEvent.id, id);
assert.deepEqual(seen, ["attempt 1 failed: card network timeout, retry: true", 'done: {"charged":7}']);
assert.deepEqual(
  spans.map((s) => [s.name, s.attributes["gen_durable.attempt"], s.attributes["gen_durable.outcome"]]),
  [
    ["gen-durable step Charge.perform", 1, "error"],
    ["gen-durable step Charge.perform", 2, "done"],
  ],
);
assert.equal(spans[0]!.events[0]!.name, "exception");
assert.equal(durations?.descriptor.unit, "ms");
assert.deepEqual(outcomes, ["done", "error"]);
assert.equal(parked?.value, 1);
assert.equal(plainDone.status, "done");
assert.deepEqual(
  charging.map((r) => [r.id, r.machine, r.step, r.attempt, r.order]),
  [
    [order.id, "Charge", "perform", 1, 11],
    [order.id, "Charge", "perform", 2, 11],
  ],
);
assert.ok(
  records.some(
    (r) => r.level === 40 && r.msg === "step Charge.perform failed attempt 1: card network timeout; it will be retried",
  ),
);
