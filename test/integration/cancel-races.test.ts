// engine.cancel racing a spawn and a retry, each interleaving forced with a lock held from a side
// connection: cancel sees every child committed before it returns, and a retried child never
// outlives a cancelled parent.
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine, InvalidStateError } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { blockedOrSettled, Gates, outcome, sideClient, waitForLockWait } from "../support/locks.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const gates = new Gates();
afterAll(() => {
  // Steps still parked at a gate finish (and are fenced off) before the engines stop.
  for (const name of ["1a-pool", "1a-transaction", "1a-autocommit", "1b", "1c", "2a", "2b"]) gates.open(name);
});

/** Waits at its gate (when given) so it cannot finish before the test has looked. */
const Leaf = defineJob({
  name: "Leaf",
  queue: "races",
  args: z.object({ n: z.number(), gate: z.string() }),
  perform: async ({ n, gate }) => {
    await gates.wait(gate);
    return n;
  },
});

/** Spawns `count` leaves; the first carries concurrency key `key`, so a side connection holding that key's row stalls the spawn's commit. */
const Spawner = defineMachine({
  name: "Spawner",
  queue: "races",
  state: z.object({ key: z.string(), count: z.number(), gate: z.string().optional() }),
  steps: {
    start: async (ctx) => {
      if (ctx.state.gate !== undefined) await gates.wait(ctx.state.gate);
      const leaves = Array.from({ length: ctx.state.count }, (_, n) => ({
        machine: Leaf,
        args: { n, gate: ctx.state.key },
        ...(n === 0 ? { concurrencyKey: ctx.state.key } : {}),
      }));
      return ctx.spawn(leaves, "join");
    },
    join: (ctx) => ctx.done(ctx.children.map((c) => c.status)),
  },
});

const Top = defineMachine({
  name: "Top",
  queue: "races",
  state: z.object({ key: z.string() }),
  steps: {
    start: (ctx) => ctx.spawn([{ machine: Spawner, state: { key: ctx.state.key, count: 3 } }], "join"),
    join: (ctx) => ctx.done(),
  },
});

/** Fails its first run (one attempt); a retried run waits at its gate. */
const failedOnce = new Set<string>();
const Flaky = defineJob({
  name: "Flaky",
  queue: "races",
  maxAttempts: 1,
  args: z.object({ key: z.string() }),
  perform: async ({ key }) => {
    if (!failedOnce.has(key)) {
      failedOnce.add(key);
      throw new Error(`the first run of ${key} fails`);
    }
    await gates.wait(key);
    return key;
  },
});

const Waiter = defineMachine({
  name: "Waiter",
  queue: "races",
  state: z.object({}),
  steps: { start: (ctx) => ctx.await("go", "end"), end: (ctx) => ctx.done() },
});

const Family = defineMachine({
  name: "Family",
  queue: "races",
  state: z.object({ key: z.string() }),
  steps: {
    start: (ctx) =>
      ctx.spawn(
        [
          { machine: Flaky, args: { key: ctx.state.key } },
          { machine: Waiter, state: {} },
        ],
        "join",
      ),
    join: (ctx) => ctx.done(ctx.children.map((c) => c.status)),
  },
});

// Cancelled leaves stay parked at their gates until the node finds their leases lost: room for all of them.
const engine = db.engine({ queues: { races: 64 }, machines: [Leaf, Spawner, Top, Flaky, Waiter, Family] });
await engine.start();
/** A pure client on another pool: cancels and retries from outside, as an API call or the CLI would. */
const client = db.engine();

const CANCEL = [db.schema, "-- cancel:"];
const RETRY = [db.schema, "retr"];
const SPAWN = [db.schema, "jsonb_to_recordset($1::jsonb) as x("];

async function statuses(parentId: string): Promise<Array<{ id: string; machine: string; status: string }>> {
  const { rows } = await db.pool.query(
    `select id::text as id, machine, status from ${s}.instances where parent_id = $1 order by id`,
    [parentId],
  );
  return rows;
}

/** Holds the row of concurrency key `key` in a transaction of a side connection; commit() lets go. */
async function holdKey(key: string): Promise<{ commit: () => Promise<void> }> {
  const side = await sideClient(db.url);
  await side.query("begin");
  await side.query(`insert into ${s}.concurrency_keys (key) values ($1) on conflict do nothing`, [key]);
  await side.query(`select 1 from ${s}.concurrency_keys where key = $1 for update`, [key]);
  return { commit: async () => void (await side.query("commit")) };
}

/** Holds an instance's row lock in a transaction of a side connection. */
async function holdRow(id: string): Promise<{ commit: () => Promise<void> }> {
  const side = await sideClient(db.url);
  await side.query("begin");
  await side.query(`select 1 from ${s}.instances where id = $1 for update`, [id]);
  return { commit: async () => void (await side.query("commit")) };
}

describe("cancel vs spawn", () => {
  it.each(["pool", "transaction", "autocommit"] as const)(
    "a spawn that holds the parent's row lock when cancel starts: cancel waits for it and cancels the children it committed (%s)",
    async (mode) => {
      const key = `1a-${mode}`;
      const held = await holdKey(key);
      const { id } = await engine.insert(Spawner, { state: { key, count: 5 } });
      // The spawn's transaction has locked the parent (its outcome) and waits to insert the children.
      await waitForLockWait(db.pool, "the spawn's child insert", SPAWN);
      // The children bring a concurrency key the cancel did not take first: it starts over, taking it.
      const caller = mode === "pool" ? undefined : await sideClient(db.url);
      if (mode === "transaction") await caller!.query("begin");
      const cancelling = client.cancel(id, "stop", caller ? { client: caller } : {});
      await waitForLockWait(db.pool, "cancel", CANCEL);
      await held.commit();
      await cancelling;
      if (mode === "transaction") await caller!.query("commit");
      // Leaves wait at their gate, so none can finish on its own: cancel must have reached each one.
      const children = await statuses(id);
      expect(children).toHaveLength(5);
      expect(children.map((c) => c.status)).toEqual(Array(5).fill("cancelled"));
      expect((await client.get(id))?.status).toBe("cancelled");
    },
  );

  it("a grandchild spawn in flight under a cancelled tree: cancel waits for the child and cancels the grandchildren", async () => {
    const key = "1b";
    const held = await holdKey(key);
    const { id } = await engine.insert(Top, { state: { key } });
    await waitForLockWait(db.pool, "the child's spawn", SPAWN);
    const cancelling = client.cancel(id, "stop the tree");
    await waitForLockWait(db.pool, "cancel", CANCEL);
    await held.commit();
    await cancelling;
    const [middle] = await statuses(id);
    expect(middle?.status).toBe("cancelled");
    const leaves = await statuses(middle!.id);
    expect(leaves).toHaveLength(3);
    expect(leaves.map((c) => c.status)).toEqual(["cancelled", "cancelled", "cancelled"]);
  });

  it("cancel first: the spawn's commit is fenced off and inserts no child", async () => {
    const key = "1c";
    const { id } = await engine.insert(Spawner, { state: { key, count: 3, gate: key } });
    await eventually("the spawning step to run", () => gates.reached(key));
    const lost = new Promise<void>((resolve) => engine.on("lease:lost", (e) => e.id === id && resolve()));
    await client.cancel(id, "stop");
    gates.open(key);
    await lost;
    expect(await statuses(id)).toEqual([]);
    expect((await client.get(id))?.status).toBe("cancelled");
  });
});

describe("cancel vs retry of a failed child", () => {
  async function family(key: string) {
    const { id } = await engine.insert(Family, { state: { key } });
    const [flaky, waiter] = await eventually("one child failed, the other awaiting", async () => {
      const children = await statuses(id);
      return children[0]?.status === "failed" && children[1]?.status === "awaiting" ? children : null;
    });
    return { id, flaky: flaky!, waiter: waiter! };
  }

  it("cancel first: a retry of the failed child waits for the cancel, then is refused", async () => {
    const { id, flaky, waiter } = await family("2a");
    // Cancel locks the parent, then waits for this held child; the failed one it has seen as failed.
    const held = await holdRow(waiter.id);
    const cancelling = outcome(client.cancel(id, "stop"));
    await waitForLockWait(db.pool, "cancel", CANCEL);
    const retrying = outcome(client.retry(flaky.id));
    await blockedOrSettled(db.pool, "retry", retrying, RETRY);
    await held.commit();
    expect((await cancelling).ok).toBe(true);
    const retried = await retrying;
    expect(retried.ok).toBe(false);
    const error = (retried as { error: unknown }).error;
    expect(error).toBeInstanceOf(InvalidStateError);
    expect((error as Error).message).toBe(
      `retry: instance ${flaky.id} cannot run again: its ancestor ${id} was cancelled`,
    );
    expect((await statuses(id)).map((c) => c.status)).toEqual(["failed", "cancelled"]);
  });

  it("retry first: a cancel that comes while the retry holds the parent cancels the retried child", async () => {
    const { id, flaky } = await family("2b");
    // The retry locks the parent, then waits for this held child.
    const held = await holdRow(flaky.id);
    const retrying = outcome(client.retry(flaky.id));
    await waitForLockWait(db.pool, "retry", RETRY);
    const cancelling = outcome(client.cancel(id, "stop"));
    await blockedOrSettled(db.pool, "cancel", cancelling, CANCEL);
    await held.commit();
    expect((await retrying).ok).toBe(true);
    expect((await cancelling).ok).toBe(true);
    // The retried child waits at its gate when it runs, so only the cancel can have made it terminal.
    expect((await statuses(id)).map((c) => c.status)).toEqual(["cancelled", "cancelled"]);
  });
});
