// Checks of docs/scheduling-and-queues.md, appended to its examples by test/docs/docs.test.ts: the
// guide's top-level names are in scope here.
import assert from "node:assert/strict";

assert.equal(later?.status, "runnable");
assert.ok(Math.abs(later!.runAt.getTime() - (inAnHourInsertedAt() + 3600_000)) < 60_000);
assert.equal(newYearInstance?.runAt.toISOString(), "2031-01-01T00:00:00.000Z");
assert.match(notYet.reasons.join("\n"), /due at 2031-01-01T00:00:00.000Z/);

assert.equal(waiting.status, "runnable");
assert.equal(waiting.priority, 10);
assert.ok(waiting.runAt.getTime() > waiting.updatedAt.getTime() + 2 * 86_400_000);
assert.deepEqual(order, ["customer", "routine", "nightly"]);

assert.deepEqual(beat.result, { ok: "api" });
assert.deepEqual(beat.state, { service: "api" });

const expected = [
  /cron entry "typo": schedule "61 \* \* \* \*" is not a valid cron expression .*minute: 61/,
  /cron entry "tz": unknown timezone "Europe\/Atlantis"/,
  /cron entry "report": machine "DailyReport" is not in machines/,
  /cron entry "bad-args": args of Heartbeat is invalid: service: /,
];
mistakes.forEach((entry, i) =>
  assert.throws(
    () => new GenDurable({ ...base, cron: [entry] }),
    (error) => error instanceof ConfigError && expected[i]!.test(error.message),
  ),
);

assert.deepEqual(thumbnail.result, { thumbnail: "cat.png.small.png" });
assert.deepEqual(pausedQueues, ["images"]);
assert.ok(why.reasons.includes('queue "images" is paused'));
assert.equal(resumed.status, "done");

/** When the hour-delayed invoice was inserted: its row's insertedAt (database time). */
function inAnHourInsertedAt(): number {
  return later!.insertedAt.getTime();
}
