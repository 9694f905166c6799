// Checks of docs/getting-started.md, appended to its examples by test/docs/docs.test.ts: the guide's
// top-level names are in scope here.
import assert from "node:assert/strict";

assert.deepEqual(
  applied,
  Migration.list().map((m) => m.id),
); // a fresh database: every migration
assert.deepEqual(again, []);
assert.match(upSql, /create table "gen_durable"\.instances/);
assert.match(downSql, /drop table if exists "gen_durable"\.concurrency_keys/);

assert.equal(inserted, true);
assert.equal(finished.status, "done");
assert.deepEqual(finished.result, { userId: 1 });
assert.deepEqual(finished.state, { email: "ada@example.com", userId: 1 });
assert.equal(second.inserted, true);
assert.deepEqual(welcomed.slice(0, 2), ["ada@example.com", "ada@example.com"]);

assert.equal(instance?.machine, "Signup");
assert.deepEqual(
  history.map((t) => [t.fromStep, t.outcome, t.toStep]),
  [
    ["start", "next", "welcome"],
    ["welcome", "done", null],
  ],
);
assert.deepEqual(
  recent.map((i) => i.id),
  [second.id, id],
);
assert.equal(why.status, "done");
assert.equal(seen.length, 2);

assert.deepEqual(retried, { id: created.id, inserted: false });
assert.deepEqual(later, { id: created.id, inserted: false });
assert.deepEqual(reused, { id: sent.id, inserted: false }); // the rejected insert added no instance
assert.equal(done.status, "done");
