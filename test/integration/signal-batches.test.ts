// Concurrent engine.signal calls of one engine share a statement (deliver_signals): each resolves
// after the commit that stored it, with the outcome it would have had alone; a signal whose row the
// batch cannot lock without waiting is sent alone and waits there, holding up no other.
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  defineMachine,
  GenDurable,
  InstanceTerminatedError,
  UnknownInstanceError,
  ValidationError,
} from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { signalItems } from "../support/signal-items.js";
import { cancelLockWaiters, outcome, sideClient, waitForLockWait } from "../support/locks.js";
import { recordStatements } from "../support/statements.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

const Waiter = defineMachine({
  name: "Waiter",
  queue: "batches",
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.await("go", "end"),
    end: (ctx) => ctx.done(ctx.awaited.map((a) => a.payload)),
  },
});

const Packer = defineMachine({
  name: "Packer",
  queue: "batches",
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.await({ event: "item", count: 5 }, "end"),
    end: (ctx) => ctx.done(ctx.awaited.map((a) => a.payload)),
  },
});

/** Only for the typed form of signal: its target must be one of these. */
const Other = defineMachine({
  name: "Other",
  state: z.object({}),
  signals: { go: z.number() },
  steps: { start: (ctx) => ctx.done() },
});

/** Parks on a signal whose payload its schema checks: a signal it refuses is not stored. */
const Typed = defineMachine({
  name: "Typed",
  queue: "batches",
  state: z.object({}),
  signals: { go: z.number() },
  steps: {
    start: (ctx) => ctx.await("go", "end"),
    end: (ctx) => ctx.done(ctx.awaited.map((a) => a.payload)),
  },
});

const node = db.engine({ queues: { batches: 20 }, machines: [Waiter, Packer, Typed] });
await node.start();

// A pure client on a pool of its own (at most 2 deliveries in flight), whose statements are counted.
const senderPool = new pg.Pool({ connectionString: db.url, max: 4 });
const { texts } = recordStatements(senderPool);
const sender = new GenDurable({ pool: senderPool, schema: db.schema });
await sender.start();
afterAll(async () => {
  await sender.stop();
  await senderPool.end();
});
const batches = () => texts.filter((t) => t.includes("deliver_signals(")).length;

async function awaiting(ids: string[]): Promise<void> {
  await eventually(`${ids.length} instances awaiting`, async () => {
    const { rows } = await db.pool.query<{ n: number }>(
      `select count(*)::int as n from ${s}.instances where id = any($1::bigint[]) and status = 'awaiting'`,
      [ids],
    );
    return rows[0]!.n === ids.length;
  });
}

describe("concurrent signals of one engine", () => {
  it("share statements; each gets its own outcome; one whose row is locked waits alone", async () => {
    const plain = await node.insertMany(
      Array.from({ length: 40 }, (_, i) => ({ machine: Waiter, state: {}, correlationKey: `b:${i}` })),
    );
    const keyed = await node.insert(Waiter, { state: {}, correlationKey: "b:keyed", concurrencyKey: "b-key" });
    const finished = await node.insert(Waiter, { state: {}, correlationKey: "b:finished" });
    // Signalled only by the typed form naming the wrong machine.
    const other = await node.insert(Waiter, { state: {}, correlationKey: "b:other" });
    await awaiting([...plain.map((r) => r.id), keyed.id, finished.id, other.id]);
    await node.signal("b:finished", "go", "first");
    expect((await node.wait(finished.id, { timeout: 10_000 })).status).toBe("done");

    // An await's commit in progress: the row locked and parked on "go", not committed yet.
    const parked = await node.insert(Waiter, { state: {}, queue: "batches-idle" });
    const side = await sideClient(db.url);
    await side.query("begin");
    await side.query(
      `update ${s}.instances set status = 'awaiting', step = 'end', run_at = 'infinity',
         await_spec = '{"mode":"one","events":["go"],"count":1}' where id = $1`,
      [parked.id],
    );

    const before = batches();
    const sent = [
      ...plain.map((_, i) => outcome(sender.signal(`b:${i}`, "go", i))),
      outcome(sender.signal("b:keyed", "go", "keyed")),
      outcome(sender.signal("b:nobody", "go", 1)),
      outcome(sender.signal("b:finished", "go", 2)),
      outcome(sender.signal(Other, "b:other", "go", 3)),
      outcome(sender.signal(Other, "b:finished", "go", 4)),
    ];
    const blocked = outcome(sender.signal({ id: parked.id }, "go", "parked"));
    // Every other signal resolves while that row stays locked: the batch skipped it.
    const results = await Promise.all(sent);
    expect(batches()).toBeGreaterThan(before);
    for (const r of results.slice(0, 41)) expect(r.ok).toBe(true);
    const error = (i: number) => (results[i] as { error: unknown }).error;
    expect(error(41)).toBeInstanceOf(UnknownInstanceError);
    expect(error(42)).toBeInstanceOf(InstanceTerminatedError);
    expect(error(43)).toBeInstanceOf(ValidationError);
    expect(String(error(43))).toMatch(/the target is an instance of "Waiter", not of "Other"/);
    // Finished, and of another machine than the signal names: refused as a live one is.
    expect(String(error(44))).toMatch(/the target is an instance of "Waiter", not of "Other"/);

    // The parked instance's signal, sent alone, waits for the await's commit, then sees it parked.
    await waitForLockWait(db.pool, "the signal sent alone", [db.schema, "deliver_signal($1"]);
    await side.query("commit");
    await side.end();
    expect((await blocked).ok).toBe(true);
    const { rows } = await db.pool.query<{ status: string; awaited: Array<{ payload: unknown }> }>(
      `select status, awaited from ${s}.instances where id = $1`,
      [parked.id],
    );
    expect(rows[0]).toMatchObject({ status: "runnable", awaited: [{ payload: "parked" }] });

    const done = await Promise.all([...plain, keyed].map((r) => node.wait(r.id, { timeout: 15_000 })));
    expect(done.map((d) => d.result)).toEqual([...plain.map((_, i) => [i]), ["keyed"]]);
    // Nothing stored for the refused ones; every stored signal consumed.
    const { rows: stored } = await db.pool.query<{ n: number; left: number }>(
      `select count(*)::int as n, count(*) filter (where consumed_at is null)::int as left from ${s}.signals
       where instance_id = any($1::bigint[])`,
      [[...plain.map((r) => r.id), keyed.id, finished.id, parked.id]],
    );
    expect(stored[0]).toEqual({ n: 43, left: 0 });
  });

  it("signals to one target that the batch could not take are sent alone one after another, in arrival order", async () => {
    // Never claimed (no engine runs this queue): the signals are only stored, in its mailbox.
    const { id } = await node.insert(Packer, { state: {}, queue: "batches-idle" });
    // Someone holds the row for the whole test: no statement can deliver to it until they commit.
    const holder = await sideClient(db.url);
    await holder.query("begin");
    await holder.query(`select id from ${s}.instances where id = $1 for update`, [id]);
    const aloneSent = () => texts.filter((t) => t.includes("deliver_signal($1")).length;
    const first = outcome(sender.signal({ id }, "item", 0));
    await waitForLockWait(db.pool, "the first signal, sent alone", [db.schema, "deliver_signal($1"]);
    // Three more queue behind it (its target is in flight), and go in the next statement together.
    const sent = [1, 2, 3].map((i) => outcome(sender.signal({ id }, "item", i)));
    // The first one's statement ends (cancelled) while the row is still held: the batch of three
    // that follows cannot lock it, so each of them is sent alone.
    const before = aloneSent();
    expect(await cancelLockWaiters(db.pool, [db.schema, "deliver_signal($1"])).toBe(1);
    expect(String(((await first) as { error: unknown }).error)).toMatch(/canceling statement/);
    await waitForLockWait(db.pool, "the next signal, sent alone", [db.schema, "deliver_signal($1"]);
    // Only the oldest of the three is on its way; the others wait for it rather than race it for the row.
    expect(aloneSent() - before).toBe(1);
    await holder.query("commit");
    for (const r of await Promise.all(sent)) expect(r.ok).toBe(true);
    expect(aloneSent() - before).toBe(3);
    const { rows } = await db.pool.query<{ payload: number }>(
      `select payload from ${s}.signals where instance_id = $1 order by id`,
      [id],
    );
    expect(rows.map((r) => r.payload)).toEqual([1, 2, 3]);
  });

  it("a signal sent while none is in flight goes alone, and waiting there for its row holds up no other", async () => {
    const [a, b, c] = await node.insertMany(
      ["a", "b", "c"].map((k) => ({ machine: Waiter, state: {}, correlationKey: `lone:${k}` })),
    );
    await awaiting([a!.id, b!.id, c!.id]);
    const aloneSent = () => texts.filter((t) => t.includes("deliver_signal($1")).length;
    const [aloneBefore, batchesBefore] = [aloneSent(), batches()];
    await sender.signal("lone:a", "go", "a");
    expect([aloneSent() - aloneBefore, batches() - batchesBefore]).toEqual([1, 0]);
    // Someone holds b's row: its lone signal waits, and the signal to c goes past it in a batch.
    const holder = await sideClient(db.url);
    await holder.query("begin");
    await holder.query(`select id from ${s}.instances where id = $1 for update`, [b!.id]);
    const blocked = outcome(sender.signal({ id: b!.id }, "go", "b"));
    await waitForLockWait(db.pool, "the signal to b", [db.schema, "deliver_signal($1"]);
    await sender.signal("lone:c", "go", "c");
    expect(batches() - batchesBefore).toBe(1);
    await holder.query("commit");
    expect((await blocked).ok).toBe(true);
    const done = await Promise.all([a, b, c].map((r) => node.wait(r!.id, { timeout: 15_000 })));
    expect(done.map((d) => d.result)).toEqual([["a"], ["b"], ["c"]]);
  });

  it("to one instance, in one batch: a pack resumes once with the oldest, the rest stay; a dedup key stores once", async () => {
    const { id } = await node.insert(Packer, { state: {} });
    await awaiting([id]);
    const before = batches();
    const sent = await Promise.all(
      Array.from({ length: 8 }, (_, i) => sender.signal({ id }, "item", i, { dedupKey: `item-${i % 7}` })),
    );
    expect(batches()).toBeGreaterThan(before);
    expect(sent.filter((r) => r.duplicate)).toHaveLength(1);
    const done = await node.wait(id, { timeout: 15_000 });
    const { rows } = await db.pool.query<{ n: number; left: number }>(
      `select count(*)::int as n, count(*) filter (where consumed_at is null)::int as left from ${s}.signals
       where instance_id = $1`,
      [id],
    );
    expect(rows[0]).toEqual({ n: 7, left: 2 });
    // The five oldest stored, in arrival order.
    const { rows: consumed } = await db.pool.query<{ payload: number }>(
      `select payload from ${s}.signals where instance_id = $1 and consumed_at is not null order by id`,
      [id],
    );
    expect(done.result).toEqual(consumed.map((r) => r.payload));
    expect(consumed).toHaveLength(5);
  });
});

describe("a batch's targets", () => {
  it("a key and an instance id that share a correlation key: the finished one by id, the live one by key, in one batch", async () => {
    const old = await node.insert(Waiter, { state: {}, correlationKey: "shared" });
    await awaiting([old.id]);
    await node.signal("shared", "go", "old");
    expect((await node.wait(old.id, { timeout: 10_000 })).status).toBe("done");
    const live = await node.insert(Waiter, { state: {}, correlationKey: "shared" });
    await awaiting([live.id]);
    const aloneSent = () => texts.filter((t) => t.includes("deliver_signal($1")).length;
    // Two more targets, so that the signals to the old and the live instance come while others are in flight.
    const others = await node.insertMany([0, 1].map((i) => ({ machine: Waiter, state: {}, correlationKey: `s:${i}` })));
    await awaiting(others.map((r) => r.id));
    const [aloneBefore, batchesBefore] = [aloneSent(), batches()];
    const sent = [
      outcome(sender.signal("s:0", "go", 0)),
      outcome(sender.signal("s:1", "go", 1)),
      outcome(sender.signal({ id: old.id }, "go", "to the old one")),
      outcome(sender.signal("shared", "go", "to the live one")),
    ];
    const results = await Promise.all(sent);
    expect(results.map((r) => r.ok)).toEqual([true, true, false, true]);
    expect((results[2] as { error: unknown }).error).toBeInstanceOf(InstanceTerminatedError);
    // Only the first went alone (nothing was in flight); the others went in batches, the live
    // instance found by its key among the rows its batch held, not sent back to go alone.
    expect(aloneSent() - aloneBefore).toBeLessThanOrEqual(1);
    expect(batches() - batchesBefore).toBeGreaterThanOrEqual(1);
    expect((await node.wait(live.id, { timeout: 10_000 })).result).toEqual(["to the live one"]);
  });

  it("a batch refuses an item whose payload the target's machine refuses, and delivers the others", async () => {
    const [refused, fine] = await node.insertMany(
      ["refused", "fine"].map((k) => ({ machine: Typed, state: {}, correlationKey: `typed:${k}` })),
    );
    await awaiting([refused!.id, fine!.id]);
    // As the engine sends them: machineNot names the machines whose signal schema refuses the payload.
    const { rows } = await db.pool.query<{ outcome: string; machine: string | null }>(
      `select outcome, machine from ${s}.deliver_signals($1::jsonb) order by idx`,
      [
        signalItems([
          { target: "typed:refused", event: "go", payload: "not a number", refused: ["Typed"] },
          { target: "typed:fine", event: "go", payload: 2, refused: ["Other"] },
        ]),
      ],
    );
    expect(rows).toEqual([
      { outcome: "refused", machine: "Typed" },
      { outcome: "delivered", machine: "Typed" },
    ]);
    expect((await node.wait(fine!.id, { timeout: 10_000 })).result).toEqual([2]);
    // Nothing stored for the refused one: it still awaits, its mailbox empty.
    const { rows: left } = await db.pool.query<{ status: string; n: number }>(
      `select i.status, (select count(*)::int from ${s}.signals g where g.instance_id = i.id) as n
       from ${s}.instances i where i.id = $1`,
      [refused!.id],
    );
    expect(left[0]).toEqual({ status: "awaiting", n: 0 });
  });

  it("deliveries keep to their indexes on a session whose plans were made while the tables were nearly empty", async () => {
    // A connection of its own: its plans of the delivery functions are made on its first call,
    // when the mailbox holds almost nothing, and kept. Whatever the mailbox holds later, a
    // delivery looks rows up by key and never scans a table (counted for this transaction).
    const client = await sideClient(db.url);
    try {
      const targets = await node.insertMany(
        Array.from({ length: 30 }, (_, i) => ({
          machine: Packer,
          state: {},
          correlationKey: `scan:${i}`,
        })),
      );
      await awaiting(targets.map((r) => r.id));
      const deliver = (keys: string[]) =>
        client.query<{ outcome: string; wake_queue: string | null }>(
          `select outcome, wake_queue from ${s}.deliver_signals($1::jsonb)`,
          [signalItems(keys.map((target) => ({ target, event: "item", payload: target })))],
        );
      expect((await deliver(["scan:0"])).rows).toEqual([{ outcome: "delivered", wake_queue: null }]);
      // By id: this statement's own reads would count in the transaction below (its statistics
      // are reported later).
      await client.query(
        `insert into ${s}.signals (instance_id, event, payload, consumed_at)
         select t.id, 'item', 'null', now() from unnest($1::bigint[]) t(id), generate_series(1, 100)`,
        [targets.map((r) => r.id)],
      );
      await client.query("begin");
      const rows: Array<{ outcome: string; wake_queue: string | null }> = [];
      // Four rounds to all, a fifth to all but the first (its pack filled in the fourth).
      for (let round = 0; round < 5; round++)
        rows.push(...(await deliver(targets.map((_, i) => `scan:${i}`).slice(round === 4 ? 1 : 0))).rows);
      const { rows: scans } = await client.query<{ relname: string; seq_scan: number }>(
        `select relname, seq_scan::int from pg_stat_xact_user_tables
         where schemaname = $1 and relname in ('instances', 'signals') order by relname`,
        [db.schema],
      );
      await client.query("commit");
      expect(rows.every((r) => r.outcome === "delivered")).toBe(true);
      // Every pack of five filled, each once.
      expect(rows.filter((r) => r.wake_queue === "batches")).toHaveLength(30);
      expect(scans).toEqual([
        { relname: "instances", seq_scan: 0 },
        { relname: "signals", seq_scan: 0 },
      ]);
    } finally {
      await client.end();
    }
  });
});
