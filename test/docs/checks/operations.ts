// Checks of docs/operations.md, appended to its examples by test/docs/docs.test.ts.
import assert from "node:assert/strict";

assert.deepEqual(invoiced.result, { invoiced: 7 });
const staleAgain = new GenDurable({ connectionString: process.env.DATABASE_URL, schema: "never_migrated" });
await assert.rejects(staleAgain.start(), (error) => error instanceof NotMigratedError && /migrate/.test(error.message));
await staleAgain.stop();
