// Checks of docs/jobs.md, appended to its examples by test/docs/docs.test.ts: the guide's top-level
// names are in scope here.
import assert from "node:assert/strict";

assert.equal(email.status, "done");
assert.deepEqual(email.result, { sent: true });
assert.deepEqual(sent.slice(0, 1), ["ada@example.com: Welcome"]);
assert.deepEqual(
  emails.map((e) => e.status),
  ["done", "done"],
);

assert.deepEqual(delivered.result, { status: 200, attempts: 3 });
assert.deepEqual(
  history.map((t) => t.outcome),
  ["error", "error", "done"],
);
assert.equal(history[0]?.error?.message, "503 from https://example.com/hook");
assert.equal(failed.status, "failed");
assert.equal(failed.error?.message, "503 from https://example.com/down");
assert.equal(failedAgain.status, "failed");
assert.deepEqual(
  doomedHistory.map((t) => t.outcome),
  ["failed", "retried", "failed"],
);

assert.deepEqual(fetched.result, { report: "q3", polls: 3 });
assert.equal(fetched.attempt, 1);
assert.deepEqual(
  reportHistory.map((t) => t.outcome),
  ["snooze", "snooze", "done"],
);

assert.equal(skipped.status, "cancelled");
assert.deepEqual(skipped.error, { name: "Cancelled", message: "user deleted" });
assert.deepEqual(invoiced.result, { invoice: 1 });
