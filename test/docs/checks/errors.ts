// Checks of docs/errors.md, appended to its examples by test/docs/docs.test.ts.
import assert from "node:assert/strict";

assert.equal(answer, 404);
assert.equal(failed.status, "failed");
assert.equal(failed.error?.message, "charge failed");
assert.deepEqual(
  { message: failed.error?.cause?.message, code: failed.error?.cause?.code },
  { message: "card 4000 declined", code: "card_declined" },
);
assert.equal(last?.outcome, "failed");
assert.equal(last?.error?.message, "charge failed");

// The instance the wait gave up on was cancelled in the catch.
const checker = new GenDurable({ connectionString: process.env.DATABASE_URL });
await checker.start();
assert.equal((await checker.get(later.id))?.status, "cancelled");
await checker.stop();
