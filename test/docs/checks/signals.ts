// Checks of docs/signals.md, appended to its examples by test/docs/docs.test.ts: the guide's top-level
// names are in scope here.
import assert from "node:assert/strict";

assert.deepEqual([early.instanceId, early.duplicate], [null, false]);
assert.deepEqual(order1Done.result, { order: 1, paid: 30 });

assert.equal(
  halfway.reasons[0],
  'awaiting signals: all of "identity_verified", "contract_signed"; arrived so far: 1 × "contract_signed"',
);
assert.deepEqual(halfway.details.arrived, { contract_signed: 1 });
assert.deepEqual(decided.result, {
  applicant: "ada",
  checks: ["contract_signed", "identity_verified"],
  verdict: "approved",
});

assert.equal(hallWaiting.reasons[0], 'awaiting signals: 3 × "reading"; arrived so far: 2 × "reading"');
assert.deepEqual(averages.result, [21, 19]);

assert.equal(
  laptopWaiting.reasons[0],
  'awaiting signals: any of (2 × "approve", "reject"); arrived so far: 1 × "approve"',
);
assert.deepEqual(laptopDone.result, { item: "laptop", approved: true, by: ["ann", "bob"] });
assert.deepEqual(yachtDone.result, { item: "yacht", approved: false, by: ["cfo"] });

assert.deepEqual(taxiDone.result, { escalated: 40, approvedBy: ["ann", "bob"] });
assert.deepEqual(taxiHistory, [
  "start -await-> collect",
  "collect -resumed-> collect",
  "collect -await-> pay",
  "pay -timeout-> escalate",
  "escalate -done-> null",
]);
assert.deepEqual(hotelDone.result, { paid: 300 });

assert.deepEqual(answers, ["accepted", "duplicate", "accepted"]);
assert.deepEqual(settled.result, [50, 70]);
assert.equal(lateRedelivery, "duplicate");

assert.equal(labelsAfterJam, 0);
assert.equal(parcelWaiting.reasons[0], 'awaiting signals: "label_printed"; arrived so far: none');
assert.deepEqual(labelled.result, { tracking: "1Z-002" });

// The refused signals above threw and stored nothing.
const checkDb = new pg.Client({ connectionString: process.env.DATABASE_URL });
await checkDb.connect();
const stored = async (where: string) =>
  (await checkDb.query(`select count(*)::int as n from gen_durable.signals where ${where}`)).rows[0].n;
assert.equal(await stored("correlation_key = 'order:2'"), 0); // the payloads that are not JSON
assert.equal(await stored("payload ->> 'by' = 'dan'"), 0); // the late approval of a finished expense
assert.equal(await stored("dedup_key = 'evt_3'"), 0); // a new event to a settled plan
await checkDb.end();
