// Checks of docs/configuration.md, appended to its examples by test/docs/docs.test.ts.
import assert from "node:assert/strict";

assert.equal(resized.status, "done");
assert.equal(seenByClient?.status, "done");
assert.throws(
  () =>
    new GenDurable({
      connectionString: process.env.DATABASE_URL,
      // @ts-expect-error: misspelt on purpose
      leaseDurration: "1m",
    }),
  (error) =>
    error instanceof ConfigError &&
    error.message.includes('unknown option "leaseDurration" (did you mean "leaseDuration"?)'),
);
assert.throws(
  () =>
    new GenDurable({ connectionString: process.env.DATABASE_URL, queues: { images: 8 }, machines: [Resize, Report] }),
  /machine "Report" runs on queue "reports", which is not in queues/,
);
