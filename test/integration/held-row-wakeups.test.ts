// A claim skips rows (and concurrency keys) that another transaction has locked. Whatever holds
// such a lock and leaves a row runnable must wake the row's queue when it commits, or the row
// waits for the next poll. Each case parks its rows an hour ahead, starts a node (its poll a
// minute away), makes the rows due unannounced (as when their time comes), holds a lock in a
// caller's transaction while the node claims, then commits: only that commit can wake the node.
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, type GenDurable } from "../../src/index.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const caller = new pg.Pool({ connectionString: db.url, max: 2 });
afterAll(() => caller.end());

const Cleaned = defineMachine({
  name: "HeldCleaned",
  queue: "held",
  state: z.object({}),
  onCancel: "cleanup",
  steps: {
    start: (ctx) => ctx.await("never", "start"),
    cleanup: (ctx) => ctx.done("cleaned"),
  },
});

const Job = defineMachine({
  name: "HeldJob",
  queue: "held",
  state: z.object({ n: z.number() }),
  steps: { start: (ctx) => ctx.done(ctx.state.n) },
});

const client = db.engine({ machines: [Cleaned, Job], pollInterval: "60s" });
const HOUR = "1h";

/**
 * Starts a node, makes the rows parked an hour ahead due (no notification), and runs `hold` in a
 * caller's transaction; while it is open, another insert makes the node claim (that claim skips
 * what `hold` locked); then commits. Returns the node.
 */
async function whileHeld(hold: (client: pg.PoolClient) => Promise<unknown>): Promise<GenDurable> {
  const worker = db.engine({ queues: { held: 2 }, machines: [Cleaned, Job], pollInterval: "60s" });
  await worker.start();
  // The node is up and hears notifications: an instance inserted now runs at once.
  await worker.wait((await worker.insert(Job, { state: { n: 0 } })).id, { timeout: 5_000 });
  await db.pool.query(
    `update "${db.schema}".instances set run_at = now() where status = 'runnable' and run_at > now() + interval '30 minutes'`,
  );
  const held = await caller.connect();
  try {
    await held.query("begin");
    await hold(held);
    await worker.wait((await worker.insert(Job, { state: { n: -1 } })).id, { timeout: 5_000 });
    await held.query("commit");
    return worker;
  } catch (error) {
    await held.query("rollback").catch(() => {});
    throw error;
  } finally {
    held.release();
  }
}

describe("a commit that held a runnable row's lock wakes its queue", () => {
  it("a signal to a runnable instance", async () => {
    const { id } = await client.insert(Job, { state: { n: 1 }, delay: HOUR });
    const worker = await whileHeld((held) => client.signal({ id }, "noise", null, { client: held }));
    expect((await worker.wait(id, { timeout: 5_000 })).status).toBe("done");
    await worker.stop();
  });

  it("a second cancel of an instance whose cleanup step is runnable", async () => {
    const { id } = await client.insert(Cleaned, { state: {}, delay: HOUR });
    await client.cancel(id, "first");
    // Its cleanup step waits (as after a failed attempt's backoff).
    await db.pool.query(`update "${db.schema}".instances set run_at = now() + interval '1 hour' where id = $1`, [id]);
    expect(await client.get(id)).toMatchObject({ status: "runnable", step: "cleanup" });
    const worker = await whileHeld((held) => client.cancel(id, "second", { client: held }));
    expect(await worker.wait(id, { timeout: 5_000 })).toMatchObject({
      status: "cancelled",
      error: { message: "first" },
    });
    await worker.stop();
  });

  it("a cancel of a keyed instance: the key's next instance starts", async () => {
    const { id: first } = await client.insert(Job, { state: { n: 1 }, concurrencyKey: "k1", delay: HOUR });
    const { id: second } = await client.insert(Job, { state: { n: 2 }, concurrencyKey: "k1", delay: HOUR });
    const worker = await whileHeld((held) => client.cancel(first, "not needed", { client: held }));
    expect((await worker.wait(second, { timeout: 5_000 })).status).toBe("done");
    await worker.stop();
  });

  it("an insert of a delayed keyed instance: the key's due instance starts", async () => {
    const { id: due } = await client.insert(Job, { state: { n: 1 }, concurrencyKey: "k2", delay: HOUR });
    const worker = await whileHeld((held) =>
      client.insertMany([{ machine: Job, state: { n: 2 }, concurrencyKey: "k2", delay: HOUR }], { client: held }),
    );
    expect((await worker.wait(due, { timeout: 5_000 })).status).toBe("done");
    await worker.stop();
  });

  it("an insert of a delayed keyed instance from SQL: the key's due instance starts", async () => {
    const { id: due } = await client.insert(Job, { state: { n: 1 }, concurrencyKey: "k3", delay: HOUR });
    const worker = await whileHeld((held) =>
      held.query(
        `select * from "${db.schema}".insert('HeldJob', '{"n": 2}', '{"concurrencyKey": "k3", "delay": "1h"}')`,
      ),
    );
    expect((await worker.wait(due, { timeout: 5_000 })).status).toBe("done");
    await worker.stop();
  });
});
