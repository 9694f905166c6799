// A signal that completes an await of its event on its own is stored consumed, in one write: never
// entered into the mailbox and read back. Every other delivery (an older signal waiting, a pack, a
// duplicate, an instance with a concurrency key) keeps the mailbox's order and contents.
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { signalItems } from "../support/signal-items.js";

const db = await useTestDatabase(import.meta.url);
const s = db.schema;

interface Seen {
  id: string;
  event: string;
  payload: unknown;
  insertedAt: string;
}
const resumedWith = new Map<number, Seen[]>();
const record = (k: number, awaited: readonly { id: string; event: string; payload: unknown; insertedAt: Date }[]) =>
  resumedWith.set(
    k,
    awaited.map((a) => ({ id: a.id, event: a.event, payload: a.payload, insertedAt: a.insertedAt.toISOString() })),
  );

const Waiter = defineMachine({
  name: "Waiter",
  queue: "waiters",
  state: z.object({ k: z.number() }),
  steps: {
    start: (ctx) => ctx.await({ any: ["go", "stop"] }, "resumed"),
    resumed: (ctx) => {
      record(ctx.state.k, ctx.awaited);
      return ctx.await("again", "last");
    },
    last: (ctx) => ctx.done(),
  },
});
const Packer = defineMachine({
  name: "Packer",
  queue: "waiters",
  state: z.object({ k: z.number() }),
  steps: {
    start: (ctx) => ctx.await({ event: "item", count: 2 }, "resumed"),
    resumed: (ctx) => {
      record(ctx.state.k, ctx.awaited);
      return ctx.done();
    },
  },
});

const engine = db.engine({ queues: { waiters: 4 }, machines: [Waiter, Packer] });
await engine.start();

let next = 0;
async function parked(machine: typeof Waiter | typeof Packer, options: { concurrencyKey?: string } = {}) {
  const k = next++;
  const { id } = await engine.insert(machine, { state: { k }, correlationKey: `k:${k}`, ...options });
  await eventually(`instance ${k} awaiting`, async () => (await status(id)) === "awaiting");
  return { k, id, key: `k:${k}` };
}
async function status(id: string): Promise<string> {
  const { rows } = await db.pool.query<{ status: string }>(`select status from ${s}.instances where id = $1`, [id]);
  return rows[0]!.status;
}
async function signals(id: string) {
  const { rows } = await db.pool.query<{ id: string; event: string; consumed: boolean }>(
    `select g.id::text, g.event, g.consumed_at is not null as consumed from ${s}.signals g
     where g.instance_id = $1 order by g.id`,
    [id],
  );
  return rows;
}

/**
 * Runs `send` in a transaction and returns the row writes it made to the signals table: the
 * connection's counts before and after, inside the transaction (they hold what it has not yet
 * reported, which it reports only between transactions).
 */
async function signalWrites(send: (client: pg.ClientBase) => Promise<unknown>) {
  const client = await db.pool.connect();
  const counts = async () =>
    (
      await client.query<{ inserted: number; updated: number }>(
        `select n_tup_ins::int as inserted, n_tup_upd::int as updated from pg_stat_xact_user_tables
         where schemaname = $1 and relname = 'signals'`,
        [s],
      )
    ).rows[0]!;
  try {
    await client.query("begin");
    const before = await counts();
    await send(client);
    const after = await counts();
    await client.query("commit");
    return { inserted: after.inserted - before.inserted, updated: after.updated - before.updated };
  } catch (error) {
    await client.query("rollback");
    throw error;
  } finally {
    client.release();
  }
}

describe("a signal that completes an await on its own", () => {
  it("is inserted consumed and resumes the instance with it, in one write", async () => {
    const w = await parked(Waiter);
    const writes = await signalWrites((client) => engine.signal(w.key, "stop", { why: 1 }, { client }));
    expect(writes).toEqual({ inserted: 1, updated: 0 });
    const seen = await eventually("resumed", () => resumedWith.get(w.k));
    const [stored] = await signals(w.id);
    expect(stored).toMatchObject({ event: "stop", consumed: true });
    const { rows } = await db.pool.query<{ inserted_at: Date }>(`select inserted_at from ${s}.signals where id = $1`, [
      stored!.id,
    ]);
    expect(seen).toEqual([
      { id: stored!.id, event: "stop", payload: { why: 1 }, insertedAt: rows[0]!.inserted_at.toISOString() },
    ]);
    const history = await db.pool.query<{ outcome: string }>(
      `select outcome from ${s}.transitions where instance_id = $1 and outcome = 'resumed'`,
      [w.id],
    );
    expect(history.rows).toHaveLength(1);
  });

  it("by id, and from a batch of signals sent together, the same way", async () => {
    const a = await parked(Waiter);
    const b = await parked(Waiter);
    const c = await parked(Waiter);
    expect(await signalWrites((client) => engine.signal({ id: a.id }, "go", 1, { client }))).toEqual({
      inserted: 1,
      updated: 0,
    });
    // The statement that signals sent while another is in flight share (deliver_signals); without
    // a NOTIFY channel the engine's poll finds the resumed instances.
    const batch = await signalWrites(async (client) => {
      const { rows } = await client.query<{ outcome: string }>(
        `select outcome from ${s}.deliver_signals($1::jsonb) order by idx`,
        [
          signalItems([
            { target: b.key, event: "go", payload: 2 },
            { target: c.key, event: "go", payload: 3 },
          ]),
        ],
      );
      expect(rows.map((r) => r.outcome)).toEqual(["delivered", "delivered"]);
    });
    expect(batch).toEqual({ inserted: 2, updated: 0 });
    for (const [w, payload] of [
      [a, 1],
      [b, 2],
      [c, 3],
    ] as const) {
      const seen = await eventually(`instance ${w.k} resumed`, () => resumedWith.get(w.k));
      expect(seen.map((x) => x.payload)).toEqual([payload]);
      expect(await signals(w.id)).toEqual([expect.objectContaining({ event: "go", consumed: true })]);
    }
  });

  it("of an instance with a concurrency key: its key, then its row, as before", async () => {
    const w = await parked(Waiter, { concurrencyKey: "tenant-1" });
    expect(await signalWrites((client) => engine.signal(w.key, "go", "keyed", { client }))).toEqual({
      inserted: 1,
      updated: 0,
    });
    expect((await eventually("resumed", () => resumedWith.get(w.k))).map((x) => x.payload)).toEqual(["keyed"]);
  });
});

describe("every other delivery goes through the mailbox", () => {
  it("an older signal of the awaited events waiting: it is consumed first, the new one stays", async () => {
    const w = await parked(Waiter);
    // A signal left unconsumed in the mailbox of an awaiting instance (a race the engine closes
    // from both sides; set here by hand).
    const { rows } = await db.pool.query<{ id: string }>(
      `insert into ${s}.signals (instance_id, event, payload) values ($1, 'go', '"older"') returning id::text`,
      [w.id],
    );
    await engine.signal(w.key, "stop", "newer");
    const seen = await eventually("resumed", () => resumedWith.get(w.k));
    expect(seen.map((x) => [x.id, x.payload])).toEqual([[rows[0]!.id, "older"]]);
    expect((await signals(w.id)).map((x) => [x.event, x.consumed])).toEqual([
      ["go", true],
      ["stop", false],
    ]);
  });

  it("a pack: each signal enters the mailbox, and the last one consumes them all", async () => {
    const p = await parked(Packer);
    expect(await signalWrites((client) => engine.signal(p.key, "item", 1, { client }))).toEqual({
      inserted: 1,
      updated: 0,
    });
    expect(await status(p.id)).toBe("awaiting");
    expect(await signalWrites((client) => engine.signal(p.key, "item", 2, { client }))).toEqual({
      inserted: 1,
      updated: 2,
    });
    expect((await eventually("resumed", () => resumedWith.get(p.k))).map((x) => x.payload)).toEqual([1, 2]);
  });

  it("a duplicate stores nothing and resumes nothing; an event the await does not name waits", async () => {
    const w = await parked(Waiter);
    await engine.signal(w.key, "go", "first", { dedupKey: "d-1" });
    await eventually("resumed", () => resumedWith.get(w.k));
    await eventually("awaiting again", async () => (await status(w.id)) === "awaiting");
    // Now awaiting "again": the same dedup key is dropped, whatever its event.
    const duplicate = await engine.signal(w.key, "again", "second", { dedupKey: "d-1" });
    expect(duplicate.duplicate).toBe(true);
    expect(await status(w.id)).toBe("awaiting");
    // An event it does not await is kept in the mailbox, unconsumed.
    await engine.signal(w.key, "go", "early");
    expect(await status(w.id)).toBe("awaiting");
    expect((await signals(w.id)).map((x) => [x.event, x.consumed])).toEqual([
      ["go", true],
      ["go", false],
    ]);
    await engine.signal(w.key, "again", "third", { dedupKey: "d-2" });
    await eventually("done", async () => (await status(w.id)) === "done");
  });
});
