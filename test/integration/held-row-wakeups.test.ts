// A claim skips rows (and concurrency keys) that another transaction has locked. Whatever holds
// such a lock and leaves a row runnable must wake the row's queue when it commits, or the row
// waits for the next poll. Each case parks its rows an hour ahead, starts a node (its poll a
// minute away), makes the rows due unannounced (as when their time comes), holds a lock in a
// caller's transaction while the node claims, then commits: only that commit can wake the node.
// Operations that run their own transaction (retry, move) are held open by a lock or a check the
// test controls instead.
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  defineJob,
  defineMachine,
  InvalidStateError,
  ValidationError,
  type EngineEvents,
  type GenDurable,
} from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { outcome, sideClient, waitForLockWait } from "../support/locks.js";

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
 * Long enough for a loaded CI host (one run waited more than 5 s there), well short of the node's
 * 60 s poll: a row that starts within it was woken, not polled.
 */
const WAKE_DEADLINE = 20_000;

/**
 * Starts a node, makes the rows parked an hour ahead due (no notification), and runs `hold` in a
 * caller's transaction; while it is open, another insert makes the node claim (that claim skips
 * what `hold` locked); then commits. Returns the node.
 *
 * The queue is paused from before the rows are due until `hold` has run: a wake-up that comes late
 * (the NOTIFY of the node's first insert, delivered after that instance finished) would otherwise
 * let the node claim a due row before `hold` locks it, and run it (seen once on CI: a signal
 * found its runnable instance already done).
 */
async function whileHeld(hold: (client: pg.PoolClient) => Promise<unknown>): Promise<GenDurable> {
  const worker = db.engine({ queues: { held: 2 }, machines: [Cleaned, Job], pollInterval: "60s" });
  await worker.start();
  // The node is up and hears notifications: an instance inserted now runs at once.
  await worker.wait((await worker.insert(Job, { state: { n: 0 } })).id, { timeout: WAKE_DEADLINE });
  await client.pauseQueue("held");
  await db.pool.query(
    `update "${db.schema}".instances set run_at = now() where status = 'runnable' and run_at > now() + interval '30 minutes'`,
  );
  const held = await caller.connect();
  try {
    await held.query("begin");
    await hold(held);
    // Resuming wakes the node: its claim skips what `hold` locked.
    await client.resumeQueue("held");
    await worker.wait((await worker.insert(Job, { state: { n: -1 } })).id, { timeout: WAKE_DEADLINE });
    await held.query("commit");
    return worker;
  } catch (error) {
    await held.query("rollback").catch(() => {});
    throw error;
  } finally {
    held.release();
    await client.resumeQueue("held");
  }
}

describe("a commit that held a runnable row's lock wakes its queue", () => {
  it("a signal to a runnable instance", async () => {
    const { id } = await client.insert(Job, { state: { n: 1 }, delay: HOUR });
    const worker = await whileHeld((held) => client.signal({ id }, "noise", null, { client: held }));
    expect((await worker.wait(id, { timeout: WAKE_DEADLINE })).status).toBe("done");
    await worker.stop();
  });

  it("a second cancel of an instance whose cleanup step is runnable", async () => {
    const { id } = await client.insert(Cleaned, { state: {}, delay: HOUR });
    await client.cancel(id, "first");
    // Its cleanup step waits (as after a failed attempt's backoff).
    await db.pool.query(`update "${db.schema}".instances set run_at = now() + interval '1 hour' where id = $1`, [id]);
    expect(await client.get(id)).toMatchObject({ status: "runnable", step: "cleanup" });
    const worker = await whileHeld((held) => client.cancel(id, "second", { client: held }));
    expect(await worker.wait(id, { timeout: WAKE_DEADLINE })).toMatchObject({
      status: "cancelled",
      error: { message: "first" },
    });
    await worker.stop();
  });

  it("a cancel of a keyed instance: the key's next instance starts", async () => {
    const { id: first } = await client.insert(Job, { state: { n: 1 }, concurrencyKey: "k1", delay: HOUR });
    const { id: second } = await client.insert(Job, { state: { n: 2 }, concurrencyKey: "k1", delay: HOUR });
    const worker = await whileHeld((held) => client.cancel(first, "not needed", { client: held }));
    expect((await worker.wait(second, { timeout: WAKE_DEADLINE })).status).toBe("done");
    await worker.stop();
  });

  it("an insert of a delayed keyed instance: the key's due instance starts", async () => {
    const { id: due } = await client.insert(Job, { state: { n: 1 }, concurrencyKey: "k2", delay: HOUR });
    const worker = await whileHeld((held) =>
      client.insertMany([{ machine: Job, state: { n: 2 }, concurrencyKey: "k2", delay: HOUR }], { client: held }),
    );
    expect((await worker.wait(due, { timeout: WAKE_DEADLINE })).status).toBe("done");
    await worker.stop();
  });

  it("an insert of a delayed keyed instance from SQL: the key's due instance starts", async () => {
    const { id: due } = await client.insert(Job, { state: { n: 1 }, concurrencyKey: "k3", delay: HOUR });
    const worker = await whileHeld((held) =>
      held.query(
        `select * from "${db.schema}".insert('HeldJob', '{"n": 2}', '{"concurrencyKey": "k3", "delay": "1h"}')`,
      ),
    );
    expect((await worker.wait(due, { timeout: WAKE_DEADLINE })).status).toBe("done");
    await worker.stop();
  });
});

const Wake = defineJob({ name: "HeldWake", queue: "held-retry", args: z.object({}), perform: () => "ran" });

/** Its state check waits for the test when asked to (`hold`). */
let releaseCheck: () => void = () => {};
let checkWaiting = false;
const checkGate = new Promise<void>((resolve) => (releaseCheck = resolve));
const Gated = defineMachine({
  name: "HeldGated",
  queue: "held-move",
  state: z.object({ hold: z.boolean() }).refine(async (state) => {
    if (!state.hold) return true;
    checkWaiting = true;
    await checkGate;
    return false;
  }, "held states are refused"),
  steps: { start: (ctx) => ctx.done("ran") },
});

const listening = async () =>
  (
    await db.pool.query(
      `select pid from pg_stat_activity where application_name = 'gen-durable-listen' and query ilike $1`,
      [`%listen "gen_durable_${db.schema}"%`],
    )
  ).rows.length;

/** A node of `queue` polling once an hour, once it has made its first claim and listens; and its claims. */
async function startNode(queue: string, machines: NonNullable<Parameters<typeof db.engine>[0]>["machines"]) {
  const node = db.engine({ queues: { [queue]: 1 }, machines, pollInterval: "1h" });
  const claims: Array<EngineEvents["loop:tick"]> = [];
  node.on("loop:tick", (e) => e.loop === "scheduler" && claims.push(e));
  await node.start();
  await eventually("the node's first claim", () => claims.length > 0);
  await eventually("the node listening", async () => (await listening()) === 1);
  return { node, claims };
}

describe("operations with a transaction of their own", () => {
  it("a refused retry wakes the runnable ancestor it held while a claim skipped it", async () => {
    // Written directly: a runnable root and a failed child of it from an earlier spawn, so the
    // retry is refused once it has locked both.
    const insert = async (status: string, queue: string, parent: string | null) =>
      (
        await db.pool.query(
          `insert into "${db.schema}".instances (machine, step, state, status, queue, run_at, parent_id)
           values ('HeldWake', 'perform', '{}', $1, $2, now(), $3) returning id::text as id`,
          [status, queue, parent],
        )
      ).rows[0]!.id as string;
    const root = await insert("runnable", Wake.queue, null);
    const child = await insert("failed", "held-idle", root);
    // The child's row held elsewhere: the retry locks the root (first, in id order), then waits.
    const holder = await sideClient(db.url);
    await holder.query("begin");
    await holder.query(`select 1 from "${db.schema}".instances where id = $1 for update`, [child]);
    const retrying = outcome(client.retry(child));
    await waitForLockWait(db.pool, "the retry", [db.schema, "with recursive lineage"]);
    // The node's first claim meets the root locked and skips it.
    const { node, claims } = await startNode(Wake.queue, [Wake]);
    expect(claims[0]!.count).toBe(0);
    await holder.query("commit");
    const refused = await retrying;
    expect((refused as { error: unknown }).error).toBeInstanceOf(InvalidStateError);
    expect((await node.wait(root, { timeout: 10_000 })).result).toBe("ran");
    await node.stop();
  });

  it("a move refused for its state never held the runnable row: a claim meanwhile takes it", async () => {
    const mover = db.engine({ machines: [Gated] });
    await mover.start();
    const { id } = await mover.insert(Gated, { state: { hold: false } });
    const moving = outcome(mover.move(id, { step: "start", state: { hold: true } }));
    await eventually("the move's state check waiting", () => checkWaiting);
    const { node } = await startNode(Gated.queue, [Gated]);
    releaseCheck();
    expect(((await moving) as { error: unknown }).error).toBeInstanceOf(ValidationError);
    expect((await node.wait(id, { timeout: 10_000 })).result).toBe("ran");
    await node.stop();
  });
});
