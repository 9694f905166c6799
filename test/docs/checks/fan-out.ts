// Checks of docs/fan-out.md, appended to its examples by test/docs/docs.test.ts: the guide's top-level
// names are in scope here.
import assert from "node:assert/strict";

assert.deepEqual(counted.result, { perDocument: [4, 2, 6], total: 12 });
assert.equal(children.length, 3);
assert.equal(firstChild?.parentId, id);
assert.deepEqual(wordHistory, ["start -spawn-> reduce", "reduce -joined-> reduce", "reduce -done-> null"]);

assert.equal(settled.status, "done");
assert.deepEqual(settled.result, { charged: 2, declined: [{ card: "4242-0002", reason: "card 4242-0002 declined" }] });
assert.equal(usage.result, 12);

assert.equal(releaseWaiting.reasons[0], 'joining: 2 of 3 children still live; step "ship" runs when all have finished');
assert.deepEqual(reviews.map((child) => child.status).sort(), ["cancelled", "cancelled", "done"]);
assert.equal(bob?.error?.message, "release abandoned");
assert.equal(abandoned?.status, "cancelled");

assert.deepEqual(best.result, { best: { supplier: "acme", price: 9 }, statuses: ["done", "cancelled", "done"] });
