// idempotencyKey on insert / insertMany / ctx.spawn, remembered for the window even after the
// instance finished or was pruned; ifExists "reuse" | "reject" | "allow" on a correlation key.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine, KeyExistsError, ValidationError } from "../../src/index.js";
import { advanceTime } from "../../src/testing/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = db.schema;

const Transfer = defineJob({
  name: "Transfer",
  queue: "idem",
  args: z.object({ amount: z.number() }),
  perform: async (args) => args.amount,
});
const Saga = defineMachine({
  name: "Saga",
  queue: "idem",
  state: z.object({ key: z.string() }),
  steps: {
    start: (ctx) =>
      ctx.spawn(
        [{ machine: Transfer, args: { amount: 2 }, correlationKey: ctx.state.key, ifExists: "reject" }],
        "joined",
      ),
    joined: (ctx) => ctx.done(ctx.children.map((c) => c.status)),
  },
});
const Batch = defineMachine({
  name: "Batch",
  queue: "idem",
  state: z.object({ key: z.string() }),
  steps: {
    start: (ctx) => ctx.spawn([{ machine: Transfer, args: { amount: 1 }, idempotencyKey: ctx.state.key }], "joined"),
    joined: (ctx) => ctx.done(ctx.children.map((c) => c.status)),
  },
});
// Never claimed (no node runs queue "parked").
const Parked = defineJob({
  name: "Parked",
  queue: "parked",
  args: z.object({ n: z.number() }),
  perform: async () => null,
});

const runner = db.engine({ queues: { idem: 4 }, machines: [Transfer, Batch, Saga] });
await runner.start();
const client = db.engine();
await client.start();
// A window of zero: nothing is remembered.
const forgetful = db.engine({ idempotencyWindow: 0 });
await forgetful.start();

const rows = async (where: string, values: unknown[]) =>
  Number((await db.pool.query(`select count(*) from ${s}.instances where ${where}`, values)).rows[0].count);

describe("idempotencyKey", () => {
  it("a retried insert returns the first instance, even after it finished and was pruned", async () => {
    const first = await client.insert(Transfer, { args: { amount: 5 }, idempotencyKey: "req:1" });
    expect(first.inserted).toBe(true);
    expect(await client.insert(Transfer, { args: { amount: 5 }, idempotencyKey: "req:1" })).toEqual({
      id: first.id,
      inserted: false,
    });
    expect((await client.wait(first.id, { timeout: 10_000 })).status).toBe("done");
    expect(await client.insert(Transfer, { args: { amount: 5 }, idempotencyKey: "req:1" })).toEqual({
      id: first.id,
      inserted: false,
    });
    await client.prune({ olderThan: 0, machine: "Transfer" });
    expect(await client.get(first.id)).toBeNull();
    expect(await client.insert(Transfer, { args: { amount: 5 }, idempotencyKey: "req:1" })).toEqual({
      id: first.id,
      inserted: false,
    });
    expect(await rows("machine = 'Transfer' and state = $1", [{ amount: 5 }])).toBe(0);
  });

  it("is forgotten after the window, and the GC deletes the expired key", async () => {
    const a = await forgetful.insert(Parked, { args: { n: 1 }, idempotencyKey: "short:1" });
    const b = await forgetful.insert(Parked, { args: { n: 1 }, idempotencyKey: "short:1" });
    expect(b.inserted).toBe(true);
    expect(b.id).not.toBe(a.id);
    await forgetful.prune({});
    const { rows: left } = await db.pool.query(`select 1 from ${s}.remembered_keys where key = 'short:1'`);
    expect(left).toHaveLength(0);
  });

  it("advanceTime past the window forgets the key", async () => {
    const first = await client.insert(Parked, { args: { n: 9 }, idempotencyKey: "time:1" });
    await advanceTime(client, "25h");
    const second = await client.insert(Parked, { args: { n: 9 }, idempotencyKey: "time:1" });
    expect(second.inserted).toBe(true);
    expect(second.id).not.toBe(first.id);
  });

  it("concurrent inserts with one key create one instance", async () => {
    const results = await Promise.all(
      Array.from({ length: 8 }, () => client.insert(Parked, { args: { n: 2 }, idempotencyKey: "race:1" })),
    );
    expect(new Set(results.map((r) => r.id)).size).toBe(1);
    expect(results.filter((r) => r.inserted)).toHaveLength(1);
    expect(await rows("machine = 'Parked' and state = $1", [{ n: 2 }])).toBe(1);
  });

  it("an insert waiting for a twin's uncommitted transaction returns the twin once it commits", async () => {
    const conn = await db.pool.connect();
    try {
      await conn.query("begin");
      const first = await client.insert(Parked, { args: { n: 8 }, idempotencyKey: "wait:1", client: conn });
      const second = client.insert(Parked, { args: { n: 8 }, idempotencyKey: "wait:1" });
      await eventually("the second insert waiting for the key's lock", async () => {
        const { rows: waiting } = await db.pool.query(
          `select 1 from pg_stat_activity where wait_event = 'advisory' and position($1 in query) > 0`,
          [`'"${s}".instances'`],
        );
        return waiting.length > 0;
      });
      await conn.query("commit");
      expect(await second).toEqual({ id: first.id, inserted: false });
    } finally {
      conn.release();
    }
    expect(await rows("state = $1", [{ n: 8 }])).toBe(1);
  });

  it("insertMany: a key repeated in the batch or seen before names the first instance", async () => {
    const seen = await client.insert(Parked, { args: { n: 3 }, idempotencyKey: "many:0" });
    const out = await client.insertMany([
      { machine: Parked, args: { n: 3 }, idempotencyKey: "many:1" },
      { machine: Parked, args: { n: 3 }, idempotencyKey: "many:1" },
      { machine: Parked, args: { n: 3 }, idempotencyKey: "many:0" },
    ]);
    expect(out[0]!.inserted).toBe(true);
    expect(out[1]).toEqual({ id: out[0]!.id, inserted: false });
    expect(out[2]).toEqual({ id: seen.id, inserted: false });
    expect(await rows("machine = 'Parked' and state = $1", [{ n: 3 }])).toBe(2);
  });

  it("inside the caller's transaction: a rolled-back insert remembers nothing", async () => {
    const conn = await db.pool.connect();
    try {
      await conn.query("begin");
      await client.insert(Parked, { args: { n: 4 }, idempotencyKey: "tx:1", client: conn });
      await conn.query("rollback");
    } finally {
      conn.release();
    }
    expect((await client.insert(Parked, { args: { n: 4 }, idempotencyKey: "tx:1" })).inserted).toBe(true);
  });

  it("ctx.spawn: a child whose key names an existing instance refuses the spawn", async () => {
    const first = await client.insert(Batch, { state: { key: "child:1" } });
    expect((await client.wait(first.id, { timeout: 10_000 })).result).toEqual(["done"]);
    const second = await client.insert(Batch, { state: { key: "child:1" }, maxAttempts: 1 });
    const failed = await client.wait(second.id, { timeout: 10_000 });
    expect(failed.status).toBe("failed");
    expect(failed.error?.message).toMatch(
      /ctx\.spawn: the idempotency key "child:1" of a child already names instance \d+; no child was inserted/,
    );
  });

  it("a bad key is a ValidationError naming it", async () => {
    await expect(client.insert(Parked, { args: { n: 1 }, idempotencyKey: "" })).rejects.toThrow(
      /insert: idempotencyKey must be a non-empty string/,
    );
  });
});

describe("ifExists", () => {
  it('"reject" refuses a key whose instance finished within the window; "reuse" returns it; "allow" inserts', async () => {
    const first = await client.insert(Transfer, {
      args: { amount: 10 },
      correlationKey: "transfer:1",
      ifExists: "reject",
    });
    await client.wait(first.id, { timeout: 10_000 });
    const error = await client
      .insert(Transfer, { args: { amount: 10 }, correlationKey: "transfer:1", ifExists: "reject" })
      .catch((e: unknown) => e);
    expect(error).toBeInstanceOf(KeyExistsError);
    expect(error).toMatchObject({ code: "KEY_EXISTS", correlationKey: "transfer:1", existingId: first.id });
    expect((error as Error).message).toBe(
      `an instance with correlation key "transfer:1" already exists (instance ${first.id}) and ifExists is "reject"`,
    );
    expect(
      await client.insert(Transfer, { args: { amount: 10 }, correlationKey: "transfer:1", ifExists: "reuse" }),
    ).toEqual({ id: first.id, inserted: false });
    const allowed = await client.insert(Transfer, { args: { amount: 10 }, correlationKey: "transfer:1" });
    expect(allowed.inserted).toBe(true);
    await client.wait(allowed.id, { timeout: 10_000 });
  });

  it('ctx.spawn: a child with ifExists "reject" whose key finished within the window refuses the spawn', async () => {
    const first = await client.insert(Saga, { state: { key: "saga:1" } });
    expect((await client.wait(first.id, { timeout: 10_000 })).result).toEqual(["done"]);
    const second = await client.insert(Saga, { state: { key: "saga:1" }, maxAttempts: 1 });
    const failed = await client.wait(second.id, { timeout: 10_000 });
    expect(failed.status).toBe("failed");
    expect(failed.error?.message).toMatch(
      /ctx\.spawn: the correlation key "saga:1" of a child already names instance \d+ and the child's ifExists is "reject"; no child was inserted/,
    );
  });

  it("still sees a finished instance the GC pruned within the window", async () => {
    const first = await client.insert(Transfer, { args: { amount: 20 }, correlationKey: "transfer:2" });
    await client.wait(first.id, { timeout: 10_000 });
    await client.prune({ olderThan: 0, machine: "Transfer" });
    expect(await client.get(first.id)).toBeNull();
    await expect(
      client.insert(Transfer, { args: { amount: 20 }, correlationKey: "transfer:2", ifExists: "reject" }),
    ).rejects.toBeInstanceOf(KeyExistsError);
    expect(
      await client.insert(Transfer, { args: { amount: 20 }, correlationKey: "transfer:2", ifExists: "reuse" }),
    ).toEqual({ id: first.id, inserted: false });
  });

  it("a rejected item inserts nothing of its insertMany", async () => {
    const live = await client.insert(Parked, { args: { n: 5 }, correlationKey: "many:live" });
    await expect(
      client.insertMany([
        { machine: Parked, args: { n: 6 } },
        { machine: Parked, args: { n: 6 }, correlationKey: "many:live", ifExists: "reject" },
      ]),
    ).rejects.toMatchObject({ existingId: live.id });
    expect(await rows("state = $1", [{ n: 6 }])).toBe(0);
  });

  it("without a window, a finished instance is not looked at", async () => {
    const first = await forgetful.insert(Parked, { args: { n: 7 }, correlationKey: "nowindow:1" });
    await forgetful.cancel(first.id);
    const again = await forgetful.insert(Parked, { args: { n: 7 }, correlationKey: "nowindow:1", ifExists: "reject" });
    expect(again.inserted).toBe(true);
  });

  it("bad values are a ValidationError naming the option", async () => {
    await expect(
      // @ts-expect-error: not one of the values
      client.insert(Parked, { args: { n: 1 }, correlationKey: "k", ifExists: "sometimes" }),
    ).rejects.toThrow(/ifExists must be "reuse", "reject" or "allow", got "sometimes"/);
    await expect(client.insert(Parked, { args: { n: 1 }, ifExists: "reuse" })).rejects.toBeInstanceOf(ValidationError);
  });
});
