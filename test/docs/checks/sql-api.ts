// Checks of docs/sql-api.md, appended to its examples by test/docs/docs.test.ts.
import assert from "node:assert/strict";

assert.deepEqual(done.result, { order: 42, note: "", paid: 100 });
assert.equal(failed.status, "failed");
assert.equal(failed.error?.name, "ValidationError");
assert.match(failed.error!.message, /state of Checkout \(inserted from SQL\) is invalid: order: /);
