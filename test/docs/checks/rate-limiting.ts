// Checks of docs/rate-limiting.md, appended to its examples by test/docs/docs.test.ts.
import assert from "node:assert/strict";

assert.ok(elapsed >= 900, `ten draws from a 5/s bucket with a burst of 5 took ${elapsed} ms`);
assert.deepEqual(
  history.map((t) => t.outcome),
  ["done"],
);
assert.match(reason ?? "", /^rate limit "stripe" was short: it waits in line for tokens until /);
assert.equal(first.ok, true);
assert.equal(second.ok, false);
assert.ok(second.retryAfterMs > 0 && second.retryAfterMs <= 800);
assert.deepEqual(
  buckets.map((b) => b.partition),
  ["acct_1", "acct_2", "acct_3"],
);
assert.ok(buckets.every((b) => b.capacity === 5 && b.refillPerSecond === 5));
