// The SQL API: <schema>.insert and <schema>.signal from SQL (a trigger, psql), in the caller's
// transaction, with engine.insert's defaults and keys, woken through NOTIFY, and state checked on claim.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = db.schema;

const Order = defineMachine({
  name: "Order",
  queue: "sqlapi",
  state: z.object({ order: z.number() }),
  steps: {
    start: (ctx) => ctx.await("paid", "ship"),
    ship: (ctx) => ctx.done({ order: ctx.state.order, paid: (ctx.awaited[0]!.payload as { amount: number }).amount }),
  },
});
const Both = defineMachine({
  name: "Both",
  queue: "sqlapi",
  state: z.object({ n: z.number() }),
  steps: {
    start: (ctx) => ctx.await({ all: ["a", "b"] }, "end"),
    end: (ctx) => ctx.done(ctx.awaited.map((s) => s.event)),
  },
});
const Approval = defineMachine({
  name: "Approval",
  queue: "sqlapi",
  state: z.object({ n: z.number() }),
  steps: {
    start: (ctx) => ctx.await({ any: [{ event: "approve", count: 2 }, "reject"] }, "decide"),
    decide: (ctx) => ctx.done([...ctx.awaited.map((s) => `${s.event}:${String(s.payload)}`), `by:${ctx.resumedBy}`]),
  },
});
const Mail = defineJob({
  name: "Mail",
  queue: "sqlapi",
  args: z.object({ to: z.string().email(), cc: z.array(z.string()).default([]) }),
  perform: async (args) => args,
});
// Counts its runs in flight: instances sharing a concurrency key must never overlap.
let inFlight = 0;
let mostInFlight = 0;
const Keyed = defineJob({
  name: "Keyed",
  queue: "sqlapi",
  args: z.object({ n: z.number() }),
  perform: async (args) => {
    mostInFlight = Math.max(mostInFlight, ++inFlight);
    await new Promise((resolve) => setTimeout(resolve, 20));
    inFlight--;
    return args.n;
  },
});
// Never claimed here (no node runs queue "parked"): rows stay as inserted.
const Parked = defineMachine({
  name: "Parked",
  queue: "parked",
  state: z.object({ n: z.number() }),
  initial: "begin",
  steps: { begin: (ctx) => ctx.done() },
});

// Never claimed either; up to 3 steps of one key's instances at once.
const Paired = defineJob({
  name: "Paired",
  queue: "parked",
  args: z.object({ n: z.number() }),
  concurrency: { key: (args) => `pair:${args.n}`, limit: 3 },
  perform: async (args) => args.n,
});

// At version 3: a state inserted from SQL is the current definition's, and no upcaster may touch it.
const Versioned = defineMachine({
  name: "Versioned",
  queue: "sqlapi",
  version: 3,
  migrate: {
    2: (state) => ({ ...(state as object), upcastTo2: true }),
    3: (state) => ({ ...(state as object), upcastTo3: true }),
  },
  state: z.object({ n: z.number(), upcastTo2: z.boolean().optional(), upcastTo3: z.boolean().optional() }),
  steps: { start: (ctx) => ctx.done(ctx.state) },
});

// Polls every 10 minutes: whatever runs sooner was woken by NOTIFY.
const runner = db.engine({
  queues: { sqlapi: 4 },
  machines: [Order, Both, Mail, Keyed, Versioned, Approval],
  pollInterval: "10m",
});
await runner.start();
// A client that defines Parked too, so the SQL API knows its initial step and queue.
const client = db.engine({ machines: [Parked, Paired, Order, Mail, Both, Keyed, Versioned, Approval] });
await client.start();
await eventually(
  "the runner listening",
  async () =>
    (await db.pool.query(`select 1 from pg_stat_activity where application_name = 'gen-durable-listen'`)).rowCount,
);

const sql = async (text: string, values: unknown[] = []) => (await db.pool.query(text, values)).rows;
const sqlError = async (text: string, values: unknown[] = []) => {
  const error = await db.pool.query(text, values).then(
    () => undefined,
    (e: unknown) => e as Error & { code?: string },
  );
  expect(error).toBeDefined();
  return error!;
};

describe("insert from SQL", () => {
  it("runs with the machine's defaults, woken by NOTIFY without the poll", async () => {
    const [row] = await sql(`select * from ${s}.insert('Mail', '{"to": "a@example.com"}')`);
    expect(row.inserted).toBe(true);
    const done = await client.wait(String(row.id), { timeout: 10_000 });
    expect(done).toMatchObject({ status: "done", queue: "sqlapi", step: "perform" });
    // The schema's output (cc's default) is what the job saw and what is stored.
    expect(done.result).toEqual({ to: "a@example.com", cc: [] });
    expect(done.state).toEqual({ to: "a@example.com", cc: [] });
  });

  it("stamps a state inserted from SQL with the current version: no upcaster runs on it", async () => {
    const [row] = await sql(`select * from ${s}.insert('Versioned', '{"n": 1}')`);
    const done = await client.wait(String(row.id), { timeout: 10_000 });
    expect(done).toMatchObject({ status: "done", version: 3, state: { n: 1 } });
    expect(done.result).toEqual({ n: 1 });
    const history = await client.history(String(row.id));
    expect(history.map((t) => t.outcome)).not.toContain("migrated");
  });

  it("stores the same row as engine.insert with the same options", async () => {
    const runAt = new Date("2030-01-02T03:04:05.678Z");
    const options = { priority: -3, maxAttempts: 4, correlationKey: "parity:1", concurrencyKey: "c:1", queue: "q2" };
    const ts = await client.insert(Parked, { state: { n: 1 }, runAt, ...options });
    await client.cancel(ts.id);
    const [fromSql] = await sql(`select * from ${s}.insert('Parked', '{"n": 1}', $1)`, [
      { ...options, runAt: runAt.toISOString() },
    ]);
    const columns = "machine, step, state, queue, priority, run_at, max_attempts, correlation_key, concurrency_key";
    const [a] = await sql(`select ${columns} from ${s}.instances where id = $1`, [ts.id]);
    const [b] = await sql(`select ${columns}, unvalidated from ${s}.instances where id = $1`, [fromSql.id]);
    expect({ ...b, unvalidated: undefined }).toEqual({ ...a, unvalidated: undefined });
    expect(b.unvalidated).toBe(true);
    // Defaults: the machine's initial step and queue, priority 0, due now.
    const [d] = await sql(`select * from ${s}.insert('Parked', '{"n": 2}', '{"delay": "1h"}')`);
    const [row] = await sql(
      `select step, queue, priority, run_at > now() + interval '59 minutes' as later from ${s}.instances where id = $1`,
      [d.id],
    );
    expect(row).toEqual({ step: "begin", queue: "parked", priority: 0, later: true });
  });

  it("a live correlation key returns its instance, as engine.insert does", async () => {
    const first = await client.insert(Parked, { state: { n: 1 }, correlationKey: "live:1" });
    const [again] = await sql(`select * from ${s}.insert('Parked', '{"n": 9}', '{"correlationKey": "live:1"}')`);
    expect({ id: String(again.id), inserted: again.inserted }).toEqual({ id: first.id, inserted: false });
  });

  it("commits with the caller's transaction, or not at all", async () => {
    const conn = await db.pool.connect();
    try {
      await conn.query("begin");
      const { rows } = await conn.query(
        `select * from ${s}.insert('Parked', '{"n": 3}', '{"correlationKey": "tx:1"}')`,
      );
      await conn.query("rollback");
      expect(await client.get(String(rows[0].id))).toBeNull();
      await conn.query("begin");
      const ok = await conn.query(`select * from ${s}.insert('Mail', '{"to": "tx@example.com"}')`);
      // Not visible, and not woken, before the commit.
      expect(await client.get(String(ok.rows[0].id))).toBeNull();
      await conn.query("commit");
      expect((await client.wait(String(ok.rows[0].id), { timeout: 10_000 })).status).toBe("done");
    } finally {
      conn.release();
    }
  });

  it("a trigger on an application table inserts an instance, and a signal from SQL resumes it", async () => {
    await sql(`create table ${s}_orders (id integer primary key, amount integer)`);
    try {
      await sql(`
        create function ${s}_order_created() returns trigger language plpgsql as $$
        begin
          perform ${s}.insert('Order', jsonb_build_object('order', new.id),
                              jsonb_build_object('correlationKey', 'order:' || new.id));
          return new;
        end $$`);
      await sql(
        `create trigger order_created after insert on ${s}_orders for each row execute function ${s}_order_created()`,
      );
      await sql(`insert into ${s}_orders values (7, 100)`);
      const parked = await eventually("the order awaiting", async () => {
        const instance = await client.get({ correlationKey: "order:7" });
        return instance?.status === "awaiting" && instance;
      });
      const [sent] = await sql(`select * from ${s}.signal('order:7', 'paid', '{"amount": 100}')`);
      expect({ instance: String(sent.instance_id), duplicate: sent.duplicate }).toEqual({
        instance: parked.id,
        duplicate: false,
      });
      const done = await client.wait(parked.id, { timeout: 10_000 });
      expect(done.result).toEqual({ order: 7, paid: 100 });
      expect((await client.history(parked.id)).map((t) => t.outcome)).toEqual(["await", "resumed", "done"]);
    } finally {
      await sql(`drop table ${s}_orders`);
      await sql(`drop function ${s}_order_created()`);
    }
  });

  it("a concurrency key given from SQL keeps its instances' steps from overlapping", async () => {
    const ids: string[] = [];
    for (let n = 0; n < 4; n++) {
      const [row] = await sql(`select * from ${s}.insert('Keyed', $1, '{"concurrencyKey": "account:1"}')`, [{ n }]);
      ids.push(String(row.id));
    }
    for (const id of ids) expect((await client.wait(id, { timeout: 10_000 })).status).toBe("done");
    expect(mostInFlight).toBe(1);
  });

  it("a concurrency key given from SQL takes the limit of the machine's definition", async () => {
    const [paired] = await sql(`select * from ${s}.insert('Paired', '{"n": 1}', '{"concurrencyKey": "pair:sql"}')`);
    const [parked] = await sql(`select * from ${s}.insert('Parked', '{"n": 1}', '{"concurrencyKey": "parked:sql"}')`);
    const limits = await sql(
      `select i.id::text as id, i.concurrency_limit, k.max_running from ${s}.instances i
       join ${s}.concurrency_keys k on k.key = i.concurrency_key where i.id = any($1::bigint[]) order by i.id`,
      [[paired.id, parked.id]],
    );
    expect(limits).toEqual([
      { id: String(paired.id), concurrency_limit: 3, max_running: 3 },
      // A machine without a limit: 1, stored as null like an engine's insert stores it.
      { id: String(parked.id), concurrency_limit: null, max_running: 1 },
    ]);
  });

  it("a state the schema refuses fails the instance with a ValidationError, without retries", async () => {
    const [row] = await sql(`select * from ${s}.insert('Mail', '{"to": "not an email"}', '{"maxAttempts": 5}')`);
    const failed = await client.wait(String(row.id), { timeout: 10_000 });
    expect(failed.status).toBe("failed");
    expect(failed.error).toMatchObject({ name: "ValidationError" });
    expect(failed.error!.message).toMatch(/args of Mail \(inserted from SQL\) is invalid: to: /);
    expect(failed.attempt).toBe(1);
  });

  it("bad options raise a clear error naming the option", async () => {
    const cases: Array<[string, RegExp]> = [
      [`'{"priorty": 1}'`, /insert: unknown option "priorty" \(the options are queue, priority/],
      [`'{"priority": 1.5}'`, /insert: priority must be an integer, got 1.5/],
      [`'{"delay": "soon"}'`, /insert: delay must be a duration/],
      [`'{"delay": 5, "runAt": "2030-01-01"}'`, /insert: pass delay or runAt, not both/],
      [`'{"runAt": "tomorrow-ish"}'`, /insert: runAt must be a timestamp/],
      [`'{"maxAttempts": 0}'`, /insert: maxAttempts must be an integer from 1 to 1000000/],
      [`'{"correlationKey": ""}'`, /insert: correlationKey must be a non-empty string/],
      [`'{"queue": " q"}'`, /insert: queue must be a non-empty string/],
      [`'{"ifExists": "reuse"}'`, /insert: ifExists needs a correlationKey/],
      [`'{"ifExists": "maybe", "correlationKey": "k"}'`, /insert: ifExists must be "reuse", "reject" or "allow"/],
      [`'[1]'`, /insert options must be a JSON object/],
    ];
    for (const [options, message] of cases) {
      const error = await sqlError(`select * from ${s}.insert('Parked', '{"n": 1}', ${options})`);
      expect(error.message).toMatch(message);
      expect(error.code).toBe("22023");
    }
    const unknown = await sqlError(`select * from ${s}.insert('Nope', '{}')`);
    expect(unknown.message).toMatch(/insert: unknown machine "Nope": machines are recorded when an engine/);
  });

  it("idempotencyKey and ifExists behave as in engine.insert", async () => {
    const insert = (options: object) => sql(`select * from ${s}.insert('Parked', '{"n": 1}', $1)`, [options]);
    const [first] = await insert({ idempotencyKey: "sql-idem:1" });
    const [again] = await insert({ idempotencyKey: "sql-idem:1" });
    expect(again).toEqual({ id: first.id, inserted: false });
    // The TypeScript path sees the key remembered from SQL, and the other way round.
    expect(await client.insert(Parked, { state: { n: 1 }, idempotencyKey: "sql-idem:1" })).toEqual({
      id: String(first.id),
      inserted: false,
    });
    const ts = await client.insert(Parked, { state: { n: 1 }, idempotencyKey: "ts-idem:1" });
    expect((await insert({ idempotencyKey: "ts-idem:1" }))[0]).toEqual({ id: ts.id, inserted: false });

    const [transfer] = await insert({ correlationKey: "transfer:1", ifExists: "reject" });
    await client.cancel(String(transfer.id));
    expect((await insert({ correlationKey: "transfer:1", ifExists: "reuse" }))[0]).toEqual({
      id: transfer.id,
      inserted: false,
    });
    const rejected = await sqlError(`select * from ${s}.insert('Parked', '{"n": 1}', $1)`, [
      { correlationKey: "transfer:1", ifExists: "reject" },
    ]);
    expect(rejected.message).toContain(
      `an instance with correlation key "transfer:1" already exists (instance ${transfer.id}, cancelled)`,
    );
    expect(rejected.code).toBe("23505");
    expect((await insert({ correlationKey: "transfer:1" }))[0].inserted).toBe(true);
  });
});

describe("signal from SQL", () => {
  it("resumes an { all } await only when both arrived, each in its caller's transaction", async () => {
    const { id } = await client.insert(Both, { state: { n: 1 }, correlationKey: "both:1" });
    await eventually("parked", async () => (await client.get(id))?.status === "awaiting");
    await sql(`select * from ${s}.signal('both:1', 'b', null)`);
    expect((await client.get(id))?.status).toBe("awaiting");
    await sql(`select * from ${s}.signal($1, 'a', '{"x": 1}', '{"byId": true}')`, [id]);
    const done = await client.wait(id, { timeout: 10_000 });
    expect(done.result).toEqual(["b", "a"]);
  });

  it("resumes a composite await on two approvals, with both in ctx.awaited, and not on one", async () => {
    const { id } = await client.insert(Approval, { state: { n: 1 }, correlationKey: "approval:1" });
    await eventually("parked", async () => (await client.get(id))?.status === "awaiting");
    await sql(`select * from ${s}.signal('approval:1', 'approve', '1')`);
    // A partial match: the instance keeps waiting, and the signal stays unconsumed in its mailbox.
    expect((await client.get(id))?.status).toBe("awaiting");
    expect((await sql(`select consumed_at from ${s}.signals where instance_id = $1`, [id]))[0].consumed_at).toBeNull();
    await sql(`select * from ${s}.signal($1, 'approve', '2', '{"byId": true}')`, [id]);
    expect((await client.wait(id, { timeout: 10_000 })).result).toEqual(["approve:1", "approve:2", "by:signal"]);
  });

  it("resumes a composite await on one rejection, consuming only it", async () => {
    const { id } = await client.insert(Approval, { state: { n: 2 }, correlationKey: "approval:2" });
    await eventually("parked", async () => (await client.get(id))?.status === "awaiting");
    await sql(`select * from ${s}.signal('approval:2', 'approve', '1')`);
    await sql(`select * from ${s}.signal('approval:2', 'reject', '2')`);
    expect((await client.wait(id, { timeout: 10_000 })).result).toEqual(["reject:2", "by:signal"]);
    const left = await sql(`select event from ${s}.signals where instance_id = $1 and consumed_at is null`, [id]);
    expect(left).toEqual([{ event: "approve" }]);
  });

  it("dedupKey, ifMissing keep, and the errors of a missing or finished target", async () => {
    const [kept] = await sql(`select * from ${s}.signal('early:1', 'paid', '{"amount": 5}', '{"ifMissing": "keep"}')`);
    expect(kept.instance_id).toBeNull();
    const { id } = await client.insert(Order, { state: { order: 1 }, correlationKey: "early:1" });
    expect((await client.wait(id, { timeout: 10_000 })).result).toEqual({ order: 1, paid: 5 });

    const { id: other } = await client.insert(Parked, { state: { n: 1 }, correlationKey: "dedup:1" });
    const [one] = await sql(`select * from ${s}.signal('dedup:1', 'x', null, '{"dedupKey": "d1"}')`);
    const [two] = await sql(`select * from ${s}.signal('dedup:1', 'x', null, '{"dedupKey": "d1"}')`);
    expect(one).toMatchObject({ instance_id: other, duplicate: false });
    expect(two).toEqual({ signal_id: null, instance_id: other, duplicate: true });
    // The TypeScript path agrees: the key was seen.
    expect((await client.signal("dedup:1", "x", null, { dedupKey: "d1" })).duplicate).toBe(true);

    expect((await sqlError(`select * from ${s}.signal('nobody', 'x')`)).message).toMatch(
      /signal: no instance with correlation key "nobody"/,
    );
    await client.cancel(other);
    expect((await sqlError(`select * from ${s}.signal('dedup:1', 'x')`)).message).toMatch(/is already cancelled/);
    expect((await sqlError(`select * from ${s}.signal('k', 'x', null, '{"ifMising": "keep"}')`)).message).toMatch(
      /signal: unknown option "ifMising"/,
    );
  });
});

const psql = ["/usr/lib/postgresql/15/bin/psql", "/usr/bin/psql"].find((path) => existsSync(path));

describe.skipIf(!psql)("psql", () => {
  it("inserts and signals from a psql session", async () => {
    // One session: a transaction, as a person at the psql prompt would type it.
    const script = `begin;\nselect inserted from ${s}.insert('Order', '{"order": 9}', '{"correlationKey": "psql:9"}');\ncommit;\n`;
    const inserted = spawnSync(psql!, [db.url, "-X", "-v", "ON_ERROR_STOP=1", "-At"], {
      input: script,
      encoding: "utf8",
    });
    expect(inserted.status, inserted.stderr).toBe(0);
    expect(inserted.stdout).toContain("t");
    const parked = await eventually("parked", async () => {
      const instance = await client.get({ correlationKey: "psql:9" });
      return instance?.status === "awaiting" && instance;
    });
    const signalled = spawnSync(
      psql!,
      [
        db.url,
        "-X",
        "-v",
        "ON_ERROR_STOP=1",
        "-At",
        "-c",
        `select duplicate from ${s}.signal('psql:9', 'paid', '{"amount": 3}')`,
      ],
      { encoding: "utf8" },
    );
    expect(signalled.status, signalled.stderr).toBe(0);
    expect(signalled.stdout.trim()).toBe("f");
    expect((await client.wait(parked.id, { timeout: 10_000 })).result).toEqual({ order: 9, paid: 3 });
  });
});
