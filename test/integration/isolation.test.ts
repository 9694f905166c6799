// The engine needs READ COMMITTED: it sets it on its own connections and transactions whatever the
// database's or role's default, and refuses a caller's transaction (or pool) in a stricter level
// where a stricter snapshot would lose a signal or miss a child; so do the SQL API's signal and its
// insert with a correlation key.
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { ConfigError, defineMachine, GenDurable, ValidationError } from "../../src/index.js";
import { claimQueries } from "../../src/sql/claims.js";
import { useTestDatabase } from "../support/db.js";
import { Gates, outcome, sideClient, waitForLockWait } from "../support/locks.js";

const db = await useTestDatabase(import.meta.url);
const gates = new Gates();

/** Connections of this URL default to REPEATABLE READ, as with `alter role ... set default_transaction_isolation`. */
const rrUrl = (() => {
  const url = new URL(db.url);
  url.searchParams.set("options", "-c default_transaction_isolation=repeatable\\ read");
  return url.toString();
})();

/** Waits at a gate (named by its id) before it parks on "go". */
const Parker = defineMachine({
  name: "Parker",
  queue: "iso",
  state: z.object({ hold: z.boolean().optional() }),
  steps: {
    start: async (ctx) => {
      if (ctx.state.hold) await gates.wait(ctx.id);
      return ctx.await("go", "end");
    },
    end: (ctx) => ctx.done(ctx.awaited[0]!.payload),
  },
});

const node = new GenDurable({
  connectionString: rrUrl,
  schema: db.schema,
  queues: { iso: 4 },
  machines: [Parker],
  pollInterval: 200,
});
await node.start();
const client = db.engine();
const rrPool = new pg.Pool({ connectionString: rrUrl, max: 2 });
afterAll(async () => {
  await node.stop();
  await rrPool.end();
});

async function repeatableRead(): Promise<pg.Client> {
  const side = await sideClient(db.url);
  await side.query("begin isolation level repeatable read");
  await side.query("select 1"); // the snapshot is taken here
  return side;
}

describe("the engine's own connections", () => {
  it("run READ COMMITTED on a database whose default is REPEATABLE READ", async () => {
    const { rows } = await node._testing().pool.query<{ transaction_isolation: string }>("show transaction_isolation");
    expect(rows[0]!.transaction_isolation).toBe("read committed");
  });

  it("an await whose commit waits for the row lock of a signal's transaction consumes that signal", async () => {
    const { id } = await client.insert(Parker, { state: { hold: true } });
    await new Promise<void>((resolve, reject) => {
      const check = () => (gates.reached(id) ? resolve() : setTimeout(check, 5));
      setTimeout(() => reject(new Error("the step did not start")), 10_000);
      check();
    });
    // The signal's transaction locks the running instance and stores the signal, and stays open...
    const side = await sideClient(db.url);
    await side.query("begin");
    await client.signal({ id }, "go", 42, { client: side });
    // ...while the step parks: its commit locks the row first and waits.
    gates.open(id);
    await waitForLockWait(db.pool, "the await's commit", [claimQueries(db.schema).lockClaimed.text]);
    await side.query("commit");
    // Its mailbox read comes after the lock, in a statement of its own: it must see the signal.
    expect((await client.wait(id, { timeout: 10_000 })).result).toBe(42);
  });

  it("a signal that waits for the row lock of an await's commit sees the instance parked, and resumes it", async () => {
    // On a queue nobody serves: the park below is the only change to the row.
    const { id } = await client.insert(Parker, { state: {}, queue: "iso-idle" });
    const s = `"${db.schema}"`;
    // The await's commit: the row locked and parked on "go", not committed yet...
    const side = await sideClient(db.url);
    await side.query("begin");
    await side.query(
      `update ${s}.instances set status = 'awaiting', step = 'end', run_at = 'infinity',
         await_spec = '{"mode":"one","events":["go"],"count":1}' where id = $1`,
      [id],
    );
    // ...while the signal (one statement) waits for that lock.
    const signal = outcome(client.signal({ id }, "go", 7));
    await waitForLockWait(db.pool, "the signal", [db.schema, "deliver_signal("]);
    await side.query("commit");
    await side.end();
    const sent = await signal;
    expect(sent.ok).toBe(true);
    // It read the row after the lock: parked, so its signal resumed it, consumed.
    const { rows } = await db.pool.query<{ status: string; step: string; awaited: Array<{ payload: unknown }> }>(
      `select status, step, awaited from ${s}.instances where id = $1`,
      [id],
    );
    expect(rows[0]).toMatchObject({ status: "runnable", step: "end", awaited: [{ payload: 7 }] });
    const { rows: left } = await db.pool.query(
      `select 1 from ${s}.signals where instance_id = $1 and consumed_at is null`,
      [id],
    );
    expect(left).toHaveLength(0);
  });
});

describe("a caller's transaction stricter than READ COMMITTED", () => {
  it("insert with a correlation key is refused (a signal kept for the key after its snapshot would stay in the inbox)", async () => {
    const side = await repeatableRead();
    await client.signal("iso-1", "go", 1, { ifMissing: "keep" });
    const refused = client.insert(Parker, { state: {}, correlationKey: "iso-1", client: side });
    await expect(refused).rejects.toBeInstanceOf(ValidationError);
    await expect(refused).rejects.toThrow(/insert: the client's transaction is REPEATABLE READ; .*READ COMMITTED/);
    await side.query("rollback");
    // Without a correlation key there is no inbox to read: allowed.
    await side.query("begin isolation level repeatable read");
    const { inserted } = await client.insert(Parker, { state: {}, client: side });
    expect(inserted).toBe(true);
    await side.query("rollback");
  });

  it("signal is refused (an instance committed after its snapshot would be missed)", async () => {
    const side = await repeatableRead();
    await client.insert(Parker, { state: {}, correlationKey: "iso-2" });
    const refused = client.signal("iso-2", "go", 2, { client: side, ifMissing: "keep" });
    await expect(refused).rejects.toBeInstanceOf(ValidationError);
    await expect(refused).rejects.toThrow(/signal: the client's transaction is REPEATABLE READ/);
    await side.query("rollback");
  });

  it("cancel is refused (a child spawned or retried after its snapshot would be missed)", async () => {
    const { id } = await client.insert(Parker, { state: {} });
    const side = await repeatableRead();
    await expect(client.cancel(id, "no", { client: side })).rejects.toThrow(
      /cancel: the client's transaction is REPEATABLE READ/,
    );
    await side.query("rollback");
    await client.cancel(id);
  });

  it("insert with an idempotency key, no correlation key: never a second instance (Postgres refuses the stale one)", async () => {
    // The key's row committed after the snapshot: the remembered-key upsert fails with a serialization
    // failure, and the caller's retry of its transaction finds the first instance.
    const side = await repeatableRead();
    const first = await client.insert(Parker, { state: {}, idempotencyKey: "iso-4" });
    const stale = await outcome(client.insert(Parker, { state: {}, idempotencyKey: "iso-4", client: side }));
    await side.query("rollback");
    expect(stale).toMatchObject({ ok: false, error: { code: "40001" } });
    await side.query("begin isolation level repeatable read");
    expect(await client.insert(Parker, { state: {}, idempotencyKey: "iso-4", client: side })).toEqual({
      id: first.id,
      inserted: false,
    });
    await side.query("commit");
  });

  it("a pool whose connections default to REPEATABLE READ is refused by start(), and by a pure client's insert with a correlation key", async () => {
    const engine = new GenDurable({ pool: rrPool, schema: db.schema, queues: { iso: 1 }, machines: [Parker] });
    await expect(engine.start()).rejects.toBeInstanceOf(ConfigError);
    await expect(engine.start()).rejects.toThrow(/repeatable read/i);
    await engine.stop();
    const pure = new GenDurable({ pool: rrPool, schema: db.schema });
    await expect(pure.insert(Parker, { state: {}, correlationKey: "iso-3" })).rejects.toBeInstanceOf(ConfigError);
    expect((await pure.insert(Parker, { state: {} })).inserted).toBe(true);
    await pure.stop();
  });
});

describe("the SQL API in a transaction stricter than READ COMMITTED", () => {
  const s = `"${db.schema}"`;
  /** What `text` gives in a REPEATABLE READ transaction whose snapshot was taken before `meanwhile` committed. */
  async function inRepeatableRead(meanwhile: () => Promise<unknown>, text: string) {
    const side = await repeatableRead();
    await meanwhile();
    const result = await outcome(side.query(text));
    await side.query("rollback");
    return result;
  }
  const refusal = (what: string) =>
    expect.objectContaining({
      code: "25000",
      message: expect.stringMatching(
        new RegExp(`^gen-durable: ${what}: the transaction is REPEATABLE READ; gen-durable needs READ COMMITTED`),
      ),
    });

  it("signal is refused (an instance inserted after its snapshot would be missed: the signal kept in the inbox)", async () => {
    const result = await inRepeatableRead(
      () => client.insert(Parker, { state: {}, correlationKey: "iso-sql-1" }),
      `select * from ${s}.signal('iso-sql-1', 'go', '1', '{"ifMissing": "keep"}')`,
    );
    expect(result).toMatchObject({ ok: false, error: refusal("signal") });
  });

  it("insert with a correlation key is refused (a signal kept after its snapshot would stay in the inbox)", async () => {
    const result = await inRepeatableRead(
      () => client.signal("iso-sql-2", "go", 2, { ifMissing: "keep" }),
      `select * from ${s}.insert('Parker', '{}', '{"correlationKey": "iso-sql-2"}')`,
    );
    expect(result).toMatchObject({ ok: false, error: refusal("insert") });
  });

  it('insert with ifExists "reuse" is refused (an instance finished after its snapshot would be missed)', async () => {
    const result = await inRepeatableRead(async () => {
      const { id } = await client.insert(Parker, { state: {}, correlationKey: "iso-sql-3" });
      await client.cancel(id);
    }, `select * from ${s}.insert('Parker', '{}', '{"correlationKey": "iso-sql-3", "ifExists": "reuse"}')`);
    expect(result).toMatchObject({ ok: false, error: refusal("insert") });
  });

  it("insert with an idempotency key, no correlation key: never a second instance (Postgres refuses the stale one)", async () => {
    const result = await inRepeatableRead(
      () => client.insert(Parker, { state: {}, idempotencyKey: "iso-sql-4" }),
      `select * from ${s}.insert('Parker', '{}', '{"idempotencyKey": "iso-sql-4"}')`,
    );
    expect(result).toMatchObject({ ok: false, error: { code: "40001" } });
  });

  it("insert without a correlation key runs at any level", async () => {
    const result = await inRepeatableRead(
      async () => undefined,
      `select * from ${s}.insert('Parker', '{}', '{"concurrencyKey": "iso-sql-5"}')`,
    );
    expect(result).toMatchObject({ ok: true });
  });
});
