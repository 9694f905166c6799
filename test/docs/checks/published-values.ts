// Checks of docs/published-values.md, appended to its examples by test/docs/docs.test.ts.
import assert from "node:assert/strict";

assert.equal(paymentUrl, "https://pay.example/session/A-100");
assert.equal(byKey, paymentUrl);
assert.deepEqual(published, { paymentUrl });
assert.equal(status, "shipping");
assert.deepEqual(
  history.map((t) => `${t.fromStep} -${t.outcome}-> ${t.toStep}`),
  [
    "start -await-> ship",
    "start -published-> null",
    "ship -resumed-> ship",
    "ship -done-> null",
    "ship -published-> null",
  ],
);
assert.deepEqual(history[1]!.published, { paymentUrl });
