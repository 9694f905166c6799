// insert / insertMany / get / list / history / wait / cancel, and every bad input writing nothing.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  defineJob,
  defineMachine,
  GenDurable,
  UnknownInstanceError,
  ValidationError,
  WaitTimeoutError,
} from "../../src/index.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

const Parked = defineMachine({
  name: "Parked",
  queue: "idle",
  state: z.object({ order: z.number() }),
  steps: { start: (ctx) => ctx.done() },
});
const Mail = defineJob({
  name: "Mail",
  queue: "idle",
  args: z.object({ to: z.string().email() }),
  perform: async () => null,
});

// A pure client: no queues, so nothing runs and rows stay as inserted.
const client = db.engine();
await client.start();

const count = async () => Number((await db.pool.query(`select count(*) from ${db.schema}.instances`)).rows[0].count);

describe("insert", () => {
  it("stores the instance with its options", async () => {
    const runAt = new Date(Date.now() + 3_600_000);
    const { id, inserted } = await client.insert(Parked, {
      state: { order: 1 },
      priority: -5,
      runAt,
      maxAttempts: 3,
      concurrencyKey: "customer:7",
      queue: "other",
    });
    expect(inserted).toBe(true);
    const got = await client.get(id);
    expect(got).toMatchObject({
      id,
      machine: "Parked",
      status: "runnable",
      step: "start",
      state: { order: 1 },
      attempt: 0,
      priority: -5,
      queue: "other",
      concurrencyKey: "customer:7",
      parentId: null,
    });
    expect(got!.runAt.getTime()).toBe(runAt.getTime());
  });

  it("delay is measured on the database clock", async () => {
    const { id } = await client.insert(Parked, { state: { order: 2 }, delay: "1h" });
    const { rows } = await db.pool.query(`select run_at - now() as d from ${db.schema}.instances where id = $1`, [id]);
    expect(rows[0].d.hours ?? 0).toBe(0);
    expect(rows[0].d.minutes).toBe(59);
  });

  it("a live correlation key inserts nothing and returns the existing id", async () => {
    const first = await client.insert(Parked, { state: { order: 3 }, correlationKey: "order:3" });
    const second = await client.insert(Mail, { args: { to: "a@b.co" }, correlationKey: "order:3" });
    expect(second).toEqual({ id: first.id, inserted: false });
    expect((await client.get({ correlationKey: "order:3" }))?.id).toBe(first.id);
  });

  it("a key becomes free again once its instance is terminal", async () => {
    const first = await client.insert(Parked, { state: { order: 4 }, correlationKey: "order:4" });
    await client.cancel(first.id, "changed my mind");
    const second = await client.insert(Parked, { state: { order: 4 }, correlationKey: "order:4" });
    expect(second.inserted).toBe(true);
    expect(second.id).not.toBe(first.id);
  });

  it("insertMany inserts in one statement and maps results to inputs, keys deduplicated", async () => {
    const existing = await client.insert(Parked, { state: { order: 5 }, correlationKey: "order:5" });
    const results = await client.insertMany([
      { machine: Parked, state: { order: 10 } },
      { machine: Parked, state: { order: 5 }, correlationKey: "order:5" },
      { machine: Mail, args: { to: "x@y.zz" }, correlationKey: "mail:1" },
      { machine: Mail, args: { to: "x@y.zz" }, correlationKey: "mail:1" },
    ]);
    expect(results[0]!.inserted).toBe(true);
    expect(results[1]).toEqual({ id: existing.id, inserted: false });
    expect(results[2]!.inserted).toBe(true);
    expect(results[3]).toEqual({ id: results[2]!.id, inserted: false });
    expect((await client.get(results[0]!.id))?.state).toEqual({ order: 10 });
  });

  it.each([
    [
      "an invalid state",
      () => client.insert(Parked, { state: { order: "x" } as never }),
      /state of Parked is invalid: order: /,
    ],
    ["invalid args", () => client.insert(Mail, { args: { to: "nope" } }), /args of Mail is invalid: to: /],
    [
      "state for a job",
      () => client.insert(Mail, { state: { to: "a@b.co" } } as never),
      /Mail is a job: pass \{ args \}, not \{ state \}/,
    ],
    [
      "an unknown option",
      () => client.insert(Parked, { state: { order: 1 }, prority: 1 } as never),
      /unknown option "prority" \(did you mean "priority"\?\)/,
    ],
    [
      "a non-machine",
      () => client.insert({} as never, { state: {} } as never),
      /must be a machine from defineMachine or defineJob/,
    ],
    [
      "delay and runAt",
      () => client.insert(Parked, { state: { order: 1 }, delay: 1, runAt: new Date() }),
      /pass delay or runAt, not both/,
    ],
    [
      "an invalid date",
      () => client.insert(Parked, { state: { order: 1 }, runAt: new Date("nope") }),
      /runAt must be a valid Date/,
    ],
    [
      "a fractional priority",
      () => client.insert(Parked, { state: { order: 1 }, priority: 1.5 }),
      /priority must be an integer/,
    ],
    [
      "an empty correlation key",
      () => client.insert(Parked, { state: { order: 1 }, correlationKey: "" }),
      /correlationKey must be a non-empty string/,
    ],
    [
      "a NUL in a key",
      () => client.insert(Parked, { state: { order: 1 }, correlationKey: "a\u0000" }),
      /correlationKey must be/,
    ],
    [
      "maxAttempts 0",
      () => client.insert(Parked, { state: { order: 1 }, maxAttempts: 0 }),
      /maxAttempts must be an integer from 1/,
    ],
    [
      "one bad row in insertMany",
      () =>
        client.insertMany([
          { machine: Parked, state: { order: 1 } },
          // @ts-expect-error the state does not match the schema: refused at run time too
          { machine: Parked, state: { order: "bad" } },
        ]),
      /state of Parked is invalid/,
    ],
  ])("rejects %s with a ValidationError and writes nothing", async (_, call, message) => {
    const before = await count();
    const error = await call().then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(ValidationError);
    expect(String((error as Error).message)).toMatch(message);
    expect(await count()).toBe(before);
  });

  it("rejects a state too large or not JSON, writing nothing", async () => {
    const Big = defineMachine({ name: "Big", queue: "idle", state: z.any(), steps: { start: (ctx) => ctx.done() } });
    const small = db.engine({ maxPayloadBytes: 1000 });
    await small.start();
    const before = await count();
    await expect(small.insert(Big, { state: "x".repeat(1000) })).rejects.toThrowError(/over the limit of 1000 bytes/);
    await expect(small.insert(Big, { state: { s: "\u0000" } })).rejects.toThrowError(/contains a NUL character/);
    await expect(small.insert(Big, { state: { n: 10n } })).rejects.toThrowError(/is 10n, which is not JSON/);
    expect(await count()).toBe(before);
    const exact = "y".repeat(998);
    const { id } = await small.insert(Big, { state: exact });
    expect((await small.get(id))?.state).toBe(exact);
  });

  it("with { client }, the instance exists only if the caller's transaction commits", async () => {
    const conn = await db.pool.connect();
    try {
      await conn.query("begin");
      const { id } = await client.insert(Parked, { state: { order: 99 }, client: conn });
      expect(await client.get(id)).toBeNull();
      await conn.query("rollback");
      expect(await client.get(id)).toBeNull();
      await conn.query("begin");
      const kept = await client.insert(Parked, { state: { order: 100 }, client: conn });
      await conn.query("commit");
      expect((await client.get(kept.id))?.state).toEqual({ order: 100 });
    } finally {
      conn.release();
    }
  });
});

describe("reading", () => {
  it("get returns null for an unknown id and refuses a malformed one", async () => {
    expect(await client.get("999999999")).toBeNull();
    await expect(client.get("not-an-id")).rejects.toBeInstanceOf(ValidationError);
    expect(await client.get({ correlationKey: "never" })).toBeNull();
  });

  it("list filters, orders newest first and pages with after", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++)
      ids.push((await client.insert(Parked, { state: { order: 1000 + i }, queue: "listing" })).id);
    const page1 = await client.list({ queue: "listing", limit: 3 });
    expect(page1.map((i) => i.id)).toEqual([ids[4], ids[3], ids[2]]);
    const page2 = await client.list({ queue: "listing", limit: 3, after: page1[2]!.id });
    expect(page2.map((i) => i.id)).toEqual([ids[1], ids[0]]);
    expect(
      (await client.list({ machine: "Mail", status: ["runnable", "done"] })).every((i) => i.machine === "Mail"),
    ).toBe(true);
    await expect(client.list({ limit: 0 })).rejects.toThrowError(/limit must be an integer/);
    await expect(client.list({ stauts: "done" } as never)).rejects.toThrowError(/did you mean "status"/);
  });

  it("wait times out with WaitTimeoutError and rejects unknown ids", async () => {
    const { id } = await client.insert(Parked, { state: { order: 1 } });
    await expect(client.wait(id, { timeout: 50 })).rejects.toBeInstanceOf(WaitTimeoutError);
    await expect(client.wait(id, { timeout: "50ms" })).rejects.toThrowError(/did not finish within 50 ms/);
    await expect(client.wait(id, { timeout: "soon" })).rejects.toThrowError(/wait: timeout must be a duration/);
    await expect(client.wait("987654321", { timeout: 50 })).rejects.toBeInstanceOf(UnknownInstanceError);
  });

  it("explain says why an instance is not running", async () => {
    const { id } = await client.insert(Parked, { state: { order: 1 }, delay: "1h" });
    expect((await client.explain(id)).reasons[0]).toMatch(/^due at .* \(in 3[56]\d\d s\)$/);
    await client.cancel(id);
    expect((await client.explain(id)).reasons[0]).toMatch(/it is cancelled \(terminal\)/);
  });
});

describe("cancel", () => {
  it("cancels a live instance once; a second cancel is harmless; unknown ids are errors", async () => {
    const { id } = await client.insert(Parked, { state: { order: 1 } });
    const cancelled: string[] = [];
    client.on("instance:cancelled", (e) => cancelled.push(`${e.id}:${e.machine}:${e.reason}`));
    await client.cancel(id, "because");
    expect(cancelled).toEqual([`${id}:Parked:because`]);
    await client.cancel(id, "again");
    expect(await client.get(id)).toMatchObject({ status: "cancelled", error: { message: "because" } });
    expect((await client.history(id)).map((h) => h.outcome)).toEqual(["cancelled"]);
    await expect(client.cancel("123456789")).rejects.toBeInstanceOf(UnknownInstanceError);
  });

  it("cannot cancel a finished instance", async () => {
    const runner = db.engine({ queues: { idle: 2 }, machines: [Parked, Mail] });
    await runner.start();
    const { id } = await runner.insert(Parked, { state: { order: 1 } });
    await runner.wait(id, { timeout: 10_000 });
    await expect(runner.cancel(id)).rejects.toThrowError(/is already done/);
    await runner.stop();
  });
});

describe("lifecycle", () => {
  it("refuses to start on an unmigrated schema with a clear error", async () => {
    const engine = new GenDurable({ connectionString: db.url, schema: "never_migrated_here" });
    await expect(engine.start()).rejects.toThrowError(
      /schema "never_migrated_here" is not migrated: run `npx gen-durable migrate`/,
    );
    await engine.stop();
  });

  it("a stopped engine refuses work", async () => {
    const engine = db.engine();
    await engine.start();
    await engine.stop();
    await expect(engine.get("1")).rejects.toThrowError(/the engine is stopped/);
  });
});
