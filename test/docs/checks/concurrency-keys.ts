// Checks of docs/concurrency-keys.md, appended to its examples by test/docs/docs.test.ts.
import assert from "node:assert/strict";

assert.deepEqual(ledger["acct:7"], ["a", "b", "c", "d", "e"]);
assert.equal(mostAtOnce, 1);
assert.equal(keyed?.concurrencyKey, "acct:9");
assert.equal(unkeyed?.concurrencyKey, null);
assert.equal(otherPost.status, "done");
assert.equal(deployed.result, "api@2");
assert.ok(why.reasons.includes(`concurrency key "report" is held by instance ${holder}`));
assert.deepEqual(why.details.concurrencyKey, { key: "report", heldBy: holder });
