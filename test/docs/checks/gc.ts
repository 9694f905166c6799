// Checks of docs/gc.md, appended to its examples by test/docs/docs.test.ts.
import assert from "node:assert/strict";

assert.deepEqual(nothing, { instances: 0, transitions: 0, signals: 0 });
assert.equal(pruned.instances, 1);
assert.ok(pruned.transitions > 0);
assert.equal(gone, null);
assert.equal(kept?.status, "done");
