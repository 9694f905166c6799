// Checks of docs/state-machines.md, appended to its examples by test/docs/docs.test.ts: the guide's
// top-level names are in scope here.
import assert from "node:assert/strict";

assert.equal(cancelled.status, "cancelled");
assert.deepEqual(cancelled.error, { name: "Cancelled", message: "subscribed" });
assert.deepEqual(expired.result, { account: "initech", reminders: 3 });
assert.deepEqual(trialHistory, [
  "start -next-> remind",
  "remind -next-> remind",
  "remind -next-> remind",
  "remind -next-> expire",
  "expire -done-> null",
]);

assert.equal(shipped.status, "done");
assert.equal(rows[0]?.n, 1);

assert.deepEqual(quoted.result, { price: 300 });
assert.equal(timedOut?.error?.name, "StepTimeoutError");

assert.equal(failed.status, "failed");
assert.deepEqual(failed.state, { count: 0 });
assert.equal(failed.error?.name, "ValidationError");
assert.match(failed.error?.message ?? "", /^the new state from step "start" of machine "Counter" is invalid: count: /);

assert.deepEqual([delivery.duplicate, redelivery.duplicate], [false, true]);
assert.deepEqual(closed.result, { invoice: 7, approvedBy: "ops", amount: 120 });
assert.equal(lateRetry.duplicate, true);
assert.equal(early.instanceId, null);
assert.deepEqual(paid.result, { invoice: 8, approvedBy: "finance", amount: 80 });
assert.deepEqual([withdrawn.status, withdrawn.error?.message], ["cancelled", "customer withdrew"]);

// The refused calls above threw and wrote nothing: one Counter (the valid insert), no invoice:404.
const checker = new GenDurable({ connectionString: process.env.DATABASE_URL });
await checker.start();
assert.equal((await checker.list({ machine: "Counter" })).length, 1);
assert.equal(await checker.get({ correlationKey: "invoice:404" }), null);
await checker.stop();
