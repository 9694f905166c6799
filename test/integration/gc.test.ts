// GC: terminal instances (with history and signals) pruned after their
// retention, per-machine overrides, what is never pruned (live rows, children a
// live parent needs), the loop, and 100,000 terminal rows pruned by three
// pruners at once while an engine works.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  ConfigError,
  GenDurable,
  ValidationError,
  defineJob,
  defineMachine,
  migrate,
  type EngineEvents,
} from "../../src/index.js";
import { TypedEmitter } from "../../src/events.js";
import { Pruner } from "../../src/loops/gc.js";
import { databaseUrl, dropDatabase, eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = db.schema;

const noop = z.object({}).passthrough();

/**
 * A terminal (or live) instance written directly, finished `age` ago (a Postgres
 * interval). On a queue nobody runs and due never (run_at infinity), so the
 * engines' other loops leave the live ones alone.
 */
async function row(
  machine: string,
  status: string,
  age: string,
  extra: { parentId?: string; joinCounted?: boolean; childrenFrom?: string } = {},
): Promise<string> {
  const { rows } = await db.pool.query<{ id: string }>(
    `insert into ${s}.instances (machine, step, state, status, queue, updated_at, parent_id, join_counted, children_from, run_at)
     values ($1, 'start', '{}', $2, 'gc_nobody', now() - $3::interval, $4, $5, $6, 'infinity') returning id::text as id`,
    [machine, status, age, extra.parentId ?? null, extra.joinCounted ?? false, extra.childrenFrom ?? null],
  );
  return rows[0]!.id;
}

/** Two history rows and two signals (one consumed, one not) for the instance. */
async function decorate(id: string): Promise<void> {
  await db.pool.query(
    `with t as (insert into ${s}.transitions (instance_id, from_step, to_step, outcome)
                select $1, 'start', 'start', o from unnest(array['inserted', 'done']) o)
     insert into ${s}.signals (instance_id, event, consumed_at) values ($1, 'a', now()), ($1, 'b', null)`,
    [id],
  );
}

async function counts(ids: string[]): Promise<{ instances: number; transitions: number; signals: number }> {
  const { rows } = await db.pool.query(
    `select (select count(*) from ${s}.instances where id = any($1::bigint[]))::int as instances,
            (select count(*) from ${s}.transitions where instance_id = any($1::bigint[]))::int as transitions,
            (select count(*) from ${s}.signals where instance_id = any($1::bigint[]))::int as signals`,
    [ids],
  );
  return rows[0];
}

async function clearTerminal(): Promise<void> {
  await db.pool.query(`delete from ${s}.instances where status in ('done', 'failed', 'cancelled')`);
}

async function exists(id: string): Promise<boolean> {
  return (await db.pool.query(`select 1 from ${s}.instances where id = $1`, [id])).rowCount === 1;
}

describe("options", () => {
  it("validates retention and gcInterval on the engine, with defaults 7d and 1m", () => {
    const make = (options: Record<string, unknown>) => () => new GenDurable({ connectionString: db.url, ...options });
    expect(make({ retention: "soon" })).toThrow(ConfigError);
    expect(make({ retention: "soon" })).toThrow(/retention must be a duration/);
    expect(make({ retention: -1 })).toThrow(/retention must be a duration/);
    expect(make({ retention: "40000d" })).toThrow(/retention must be at most 100 years/);
    expect(make({ gcInterval: "5ms" })).toThrow(/gcInterval must be at least 10 ms, got 5 ms/);
    expect(make({ gcInterval: {} })).toThrow(/gcInterval must be a duration/);
    expect(make({ retension: "1d" })).toThrow(/unknown option "retension" \(did you mean "retention"\?\)/);
    expect(make({ gcIntervall: "1m" })).toThrow(/did you mean "gcInterval"/);
  });

  it("validates a machine's or job's retention", () => {
    expect(() =>
      defineMachine({ name: "Bad", state: noop, retention: "a week", steps: { start: (ctx) => ctx.done() } }),
    ).toThrow(/defineMachine\("Bad"\): retention must be a duration .* got "a week"/);
    expect(() => defineJob({ name: "BadJob", args: noop, retention: Number.NaN, perform: () => null })).toThrow(
      ConfigError,
    );
    expect(() => defineJob({ name: "BadJob", args: noop, retention: Number.NaN, perform: () => null })).toThrow(
      /defineJob\("BadJob"\): retention/,
    );
    expect(() => defineJob({ name: "Ok", args: noop, retention: "1d", perform: () => null })).not.toThrow();
    // @ts-expect-error: misspelt on purpose
    expect(() => defineJob({ name: "Typo", args: noop, retantion: "1d", perform: () => null })).toThrow(
      /did you mean "retention"/,
    );
  });

  it("rejects bad prune options with a ValidationError naming them, deleting nothing", async () => {
    const client = db.engine();
    const victim = await row("Validate", "done", "30 days");
    const bad: Array<[unknown, RegExp]> = [
      [{ olderThen: "1d" }, /prune: unknown option "olderThen" \(did you mean "olderThan"\?\)/],
      [{ olderThan: "yesterday" }, /prune: olderThan must be a duration/],
      [{ olderThan: -5 }, /prune: olderThan must be a duration/],
      [{ machine: "" }, /prune: machine must be a non-empty string/],
      [{ machine: 7 }, /prune: machine must be a non-empty string/],
      [{ limit: 0 }, /prune: limit must be a positive integer, got 0/],
      [{ limit: 1.5 }, /prune: limit must be a positive integer/],
      [{ limit: "10" }, /prune: limit must be a positive integer, got "10"/],
      [null, /prune: options must be an object, got null/],
    ];
    for (const [options, message] of bad) {
      const error = await client.prune(options as never).catch((e: unknown) => e);
      expect(error, JSON.stringify(options)).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toMatch(message);
    }
    expect(await exists(victim)).toBe(true);
  });
});

describe("engine.prune()", () => {
  it("prunes by the default retention (7d) and by a machine's own, which every pruner honours", async () => {
    const Short = defineJob({ name: "GcShort", args: noop, retention: "1d", perform: () => "ok" });
    const Plain = defineJob({ name: "GcPlain", args: noop, perform: () => "ok" });
    const worker = db.engine({ queues: { default: 2 }, machines: [Short, Plain] });
    await worker.start();
    const [short, plain] = await Promise.all([worker.insert(Short, { args: {} }), worker.insert(Plain, { args: {} })]);
    await worker.wait(short.id, { timeout: 30_000 });
    await worker.wait(plain.id, { timeout: 30_000 });
    // Stopped before rows are aged, so its own GC loop cannot race the prunes below.
    await worker.stop();
    // An unknown machine (no engine defines it) gets the pruner's default.
    const foreign8d = await row("GcForeign", "failed", "8 days");
    const foreign6d = await row("GcForeign", "cancelled", "6 days");

    // A pure client that does not define Short still honours its 1d: the worker recorded it.
    const client = db.engine();
    await client.start();
    // Two days old: past Short's 1d, within the 7d default.
    await db.pool.query(
      `update ${s}.instances set updated_at = now() - interval '2 days' where id = any($1::bigint[])`,
      [[short.id, plain.id]],
    );
    // Its history rows: here only its done, which is kept in the instance row.
    const history = (await client.history(short.id)).length;
    expect(history).toBeGreaterThan(0);
    expect(await client.prune({ machine: "GcShort" })).toEqual({ instances: 1, transitions: history, signals: 0 });
    expect(await client.get(short.id)).toBeNull();
    expect(await client.history(short.id)).toEqual([]);
    expect(await exists(plain.id)).toBe(true);

    expect(await client.prune({ machine: "GcPlain" })).toEqual({ instances: 0, transitions: 0, signals: 0 });
    await db.pool.query(`update ${s}.instances set updated_at = now() - interval '7 days 1 minute' where id = $1`, [
      plain.id,
    ]);
    expect((await client.prune({ machine: "GcPlain" })).instances).toBe(1);
    expect(await exists(plain.id)).toBe(false);

    expect((await client.prune({ machine: "GcForeign" })).instances).toBe(1);
    expect(await exists(foreign8d)).toBe(false);
    expect(await exists(foreign6d)).toBe(true);
    // olderThan overrides every retention.
    expect(await client.prune({ machine: "GcForeign", olderThan: "5d" })).toEqual({
      instances: 1,
      transitions: 0,
      signals: 0,
    });
    expect(await exists(foreign6d)).toBe(false);
  });

  it("forgets a machine's recorded override when an engine defines it without one", async () => {
    const before = defineJob({ name: "GcForget", args: noop, retention: "1h", perform: () => null });
    const after = defineJob({ name: "GcForget", args: noop, perform: () => null });
    await db.engine({ machines: [before] }).start();
    const recorded = async () =>
      (await db.pool.query(`select retention_ms::int as ms from ${s}.gc_retention where machine = 'GcForget'`)).rows;
    expect(await recorded()).toEqual([{ ms: 3_600_000 }]);
    const id = await row("GcForget", "done", "2 hours");
    await db.engine({ machines: [after] }).start();
    expect(await recorded()).toEqual([]);
    expect((await db.engine().prune({ machine: "GcForget" })).instances).toBe(0);
    expect(await exists(id)).toBe(true);
  });

  it("engines with opposite overrides starting together all start (no deadlock on the record)", async () => {
    const job = (name: string, retention?: string) =>
      defineJob({ name, args: noop, ...(retention ? { retention } : {}), perform: () => null });
    // Half add M's override and drop N's, half the reverse: opposite lock orders without serialisation.
    const engines = Array.from({ length: 12 }, (_, i) =>
      db.engine({
        machines: i % 2 ? [job("GcRaceM", "1h"), job("GcRaceN")] : [job("GcRaceM"), job("GcRaceN", "2h")],
        poolSize: 1,
      }),
    );
    await Promise.all(engines.map((e) => e.start()));
    const { rows } = await db.pool.query(`select machine from ${s}.gc_retention where machine like 'GcRace%'`);
    expect(rows).toHaveLength(1);
  });

  it("a machine's retention on this engine wins over the engine's retention, and 0 prunes at once", async () => {
    const Now = defineJob({ name: "GcZero", args: noop, retention: 0, perform: () => null });
    const client = db.engine({ machines: [Now], retention: "30d" });
    const zero = await row("GcZero", "done", "1 second");
    const other = await row("GcThirty", "done", "29 days");
    expect((await client.prune({ machine: "GcZero" })).instances).toBe(1);
    expect((await client.prune({ machine: "GcThirty" })).instances).toBe(0);
    expect(await exists(zero)).toBe(false);
    expect(await exists(other)).toBe(true);
  });

  it("never touches a live row, however old", async () => {
    const live = await Promise.all(
      ["runnable", "running", "awaiting", "joining"].map((status) => row("GcLive", status, "400 days")),
    );
    for (const id of live) await decorate(id);
    const done = await row("GcLive", "done", "400 days");
    const result = await db.engine().prune({ olderThan: 0, machine: "GcLive" });
    expect(result).toEqual({ instances: 1, transitions: 0, signals: 0 });
    expect(await counts(live)).toEqual({ instances: 4, transitions: 8, signals: 8 });
    expect(await exists(done)).toBe(false);
  });

  it("deletes the history and signals of pruned instances, and only theirs", async () => {
    const gone = [await row("GcHist", "done", "10 days"), await row("GcHist", "failed", "9 days")];
    const kept = [await row("GcHist", "done", "1 day"), await row("GcHist", "awaiting", "10 days")];
    for (const id of [...gone, ...kept]) await decorate(id);
    const result = await db.engine().prune({ machine: "GcHist" });
    expect(result).toEqual({ instances: 2, transitions: 4, signals: 4 });
    expect(await counts(gone)).toEqual({ instances: 0, transitions: 0, signals: 0 });
    expect(await counts(kept)).toEqual({ instances: 2, transitions: 4, signals: 4 });
  });

  it("keeps the finished children a live parent still needs, prunes the rest", async () => {
    const M = "GcFamily";
    // A joining parent: an uncounted child (the join sweep needs it) and a counted
    // child of its latest spawn (its join step reads it in ctx.children) stay;
    // a counted child of an earlier spawn goes.
    const parent = await row(M, "joining", "30 days");
    const earlier = await row(M, "done", "30 days", { parentId: parent, joinCounted: true });
    const latestCounted = await row(M, "done", "30 days", { parentId: parent, joinCounted: true });
    const latestUncounted = await row(M, "failed", "30 days", { parentId: parent, joinCounted: false });
    await db.pool.query(`update ${s}.instances set children_from = $2 where id = $1`, [parent, latestCounted]);
    // Children of a finished parent, and of a parent already pruned, go whether counted or not.
    const doneParent = await row(M, "cancelled", "1 minute");
    const orphanOfDone = await row(M, "cancelled", "30 days", { parentId: doneParent, joinCounted: false });
    const orphan = await row(M, "done", "30 days", { parentId: "999999999", joinCounted: false });

    const result = await db.engine().prune({ machine: M });
    expect(result.instances).toBe(3);
    expect(await exists(earlier)).toBe(false);
    expect(await exists(orphanOfDone)).toBe(false);
    expect(await exists(orphan)).toBe(false);
    for (const id of [parent, latestCounted, latestUncounted, doneParent]) expect(await exists(id), id).toBe(true);

    // Once the parent is finished, its children are prunable like any other row (and so is
    // the parent, finished 30 days ago as far as updated_at says).
    await db.pool.query(`update ${s}.instances set status = 'done' where id = $1`, [parent]);
    expect((await db.engine().prune({ machine: M })).instances).toBe(3);
    expect(await exists(doneParent)).toBe(true);
  });

  it("limit bounds how many instances one call prunes; batches continue in keyset order", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await row("GcLimit", "done", `${20 - i} days`));
    const client = db.engine();
    expect((await client.prune({ machine: "GcLimit", limit: 2 })).instances).toBe(2);
    // The oldest went first.
    expect(await Promise.all(ids.map(exists))).toEqual([false, false, true, true, true]);
    expect((await client.prune({ machine: "GcLimit" })).instances).toBe(3);
  });

  it("prunes more than one batch (1,000) in one call", async () => {
    await db.pool.query(
      `insert into ${s}.instances (machine, step, state, status, queue, updated_at)
       select 'GcMany', 'start', '{}', 'done', 'default', now() - interval '8 days' - g * interval '1 microsecond' from generate_series(1, 2500) g`,
    );
    expect(await db.engine().prune({ machine: "GcMany" })).toEqual({ instances: 2500, transitions: 0, signals: 0 });
  });

  it("drops expired inbox signals (without a machine filter), keeps the rest of the inbox", async () => {
    await db.pool.query(
      `insert into ${s}.signals (instance_id, correlation_key, event, expires_at)
       values (null, 'gc:inbox:old', 'x', now() - interval '1 second'), (null, 'gc:inbox:new', 'x', now() + interval '1 hour')`,
    );
    const inbox = async () =>
      (
        await db.pool.query(
          `select correlation_key from ${s}.signals where correlation_key like 'gc:inbox:%' order by 1`,
        )
      ).rows.map((r) => r.correlation_key);
    const client = db.engine();
    await client.prune({ machine: "GcNothing" });
    expect(await inbox()).toEqual(["gc:inbox:new", "gc:inbox:old"]);
    expect((await client.prune({ olderThan: "365d" })).signals).toBeGreaterThanOrEqual(1);
    expect(await inbox()).toEqual(["gc:inbox:new"]);
  });

  it("works on a pure client that was never started, and fails once it is stopped", async () => {
    const client = new GenDurable({ connectionString: db.url, schema: s });
    expect(await client.prune({ machine: "GcNobody" })).toEqual({ instances: 0, transitions: 0, signals: 0 });
    await client.stop();
    await expect(client.prune()).rejects.toMatchObject({ code: "ENGINE_STOPPED" });
  });
});

describe("the gc loop", () => {
  it("prunes on its interval and reports loop:tick 'gc' with the rows it deleted", async () => {
    const Loopy = defineJob({ name: "GcLoopy", args: noop, retention: "1h", perform: () => null });
    const worker = db.engine({ queues: { default: 1 }, machines: [Loopy], gcInterval: 50 });
    let deleted = 0;
    worker.on("loop:tick", (tick: EngineEvents["loop:tick"]) => {
      if (tick.loop === "gc") deleted += tick.count;
    });
    const errors: unknown[] = [];
    worker.on("engine:error", (e) => errors.push(e));
    // Rows left by earlier tests would be pruned too and counted in the ticks.
    await clearTerminal();
    // One statement: the loop sees all three instances or none.
    const { rows } = await db.pool.query<{ id: string }>(
      `insert into ${s}.instances (machine, step, state, status, queue, updated_at)
       values ('GcLoopy', 'start', '{}', 'done', 'default', now() - interval '2 hours'),
              ('GcLoopy', 'start', '{}', 'failed', 'default', now() - interval '3 hours'),
              ('GcLoopy', 'start', '{}', 'done', 'default', now() - interval '10 minutes')
       returning id::text as id`,
    );
    for (const { id } of rows) await decorate(id);
    await worker.start();
    await eventually(
      "the loop to prune the two old instances",
      async () => !(await exists(rows[0]!.id)) && !(await exists(rows[1]!.id)),
    );
    // 2 instances + 4 transitions + 4 signals.
    await eventually("the ticks to report 10 rows", () => deleted === 10);
    expect(await exists(rows[2]!.id)).toBe(true);
    await worker.stop();
    expect(errors).toEqual([]);
  });

  it("a tick stops at its limit and asks for another at once", async () => {
    await clearTerminal();
    await db.pool.query(
      `insert into ${s}.instances (machine, step, state, status, queue, updated_at)
       select 'GcTick', 'start', '{}', 'done', 'default', now() - interval '8 days' from generate_series(1, 12)`,
    );
    const events = new TypedEmitter();
    const ticks: number[] = [];
    events.on("loop:tick", (t) => ticks.push(t.count));
    let more = 0;
    const pruner = new Pruner({
      pool: db.pool,
      schema: s,
      retentionMs: 86_400_000,
      machines: new Map(),
      events,
      more: () => more++,
      tickLimit: 5,
    });
    await pruner.tick();
    await pruner.tick();
    expect(more).toBe(2);
    await pruner.tick();
    expect(more).toBe(2);
    expect(ticks.slice(0, 2)).toEqual([5, 5]);
    expect(ticks[2]).toBeGreaterThanOrEqual(2);
    expect(
      (await db.pool.query(`select count(*)::int as n from ${s}.instances where machine = 'GcTick'`)).rows[0].n,
    ).toBe(0);
  });
});

describe("100,000 terminal instances under load", () => {
  it(
    "three pruners at once while an engine works: all 100,000 gone exactly once, no live row lost, no deadlock",
    { timeout: 300_000 },
    async () => {
      // A database of its own, so pg_stat_database.deadlocks counts only this test.
      const server = databaseUrl();
      const name = `gc_scenario_${randomBytes(4).toString("hex")}`;
      const admin = new pg.Client({ connectionString: server });
      await admin.connect();
      await admin.query(`create database ${name}`);
      const url = new URL(server);
      url.pathname = `/${name}`;
      const pool = new pg.Pool({ connectionString: url.toString(), max: 3 });
      // Connections still closing when the database is dropped report an error: expected then.
      pool.on("error", () => {});
      pool.on("connect", (client) => client.on("error", () => {}));
      const engines: GenDurable[] = [];
      try {
        await migrate({ connectionString: url.toString() });
        const N = 100_000;
        // Each: 1 instance, 3 history rows, 2 signals: 600,000 rows, as in the scenario.
        await pool.query(
          `insert into gen_durable.instances (id, machine, step, state, status, queue, updated_at, result)
         select g, case g % 3 when 0 then 'Old0' when 1 then 'Old1' else 'Old2' end, 'start', '{"n": 1}',
                case g % 3 when 0 then 'done' when 1 then 'failed' else 'cancelled' end, 'default',
                now() - interval '2 days' - g * interval '1 second', '"r"'
         from generate_series(1, ${N}) g`,
        );
        await pool.query(
          `insert into gen_durable.transitions (instance_id, from_step, to_step, outcome)
         select g, 'start', 'start', o from generate_series(1, ${N}) g, unnest(array['inserted', 'ran', 'done']) o`,
        );
        await pool.query(
          `insert into gen_durable.signals (instance_id, event, consumed_at)
         select g, e, now() from generate_series(1, ${N}) g, unnest(array['a', 'b']) e`,
        );
        await pool.query(`select setval(pg_get_serial_sequence('gen_durable.instances', 'id'), ${N})`);
        // Live rows just as old, which must all survive.
        await pool.query(
          `insert into gen_durable.instances (machine, step, state, status, queue, updated_at, run_at)
         select 'Old0', 'start', '{}', case g % 2 when 0 then 'awaiting' else 'joining' end, 'elsewhere',
                now() - interval '30 days', 'infinity'
         from generate_series(1, 1000) g`,
        );
        await pool.query("analyze gen_durable.instances");
        const deadlocks = async () =>
          Number(
            (
              (await pool.query(
                "select pg_stat_clear_snapshot(); select deadlocks from pg_stat_database where datname = current_database()",
              )) as unknown as pg.QueryResult[]
            )[1]!.rows[0].deadlocks,
          );
        const deadlocksBefore = await deadlocks();

        const Live = defineJob({ name: "LiveWork", args: z.object({ n: z.number() }), perform: ({ n }) => n * 2 });
        const errors: unknown[] = [];
        const engine = (options: ConstructorParameters<typeof GenDurable>[0]) => {
          const e = new GenDurable({ pollInterval: 200, retention: "1d", ...options });
          e.on("engine:error", (error) => errors.push(error));
          engines.push(e);
          return e;
        };
        // Pruner 1: the worker's own GC loop, ticking while it runs live work.
        const worker = engine({
          connectionString: url.toString(),
          queues: { default: 4 },
          machines: [Live],
          gcInterval: 100,
          poolSize: 6,
        });
        let loopRows = 0;
        worker.on("loop:tick", (t) => {
          if (t.loop === "gc") loopRows += t.count;
        });
        await worker.start();
        // Pruners 2 and 3: operators' engine.prune() on two other nodes, started together.
        const clients = [engine({ connectionString: url.toString() }), engine({ connectionString: url.toString() })];
        const inserted: string[] = [];
        let pruning = true;
        const load = (async () => {
          for (let round = 0; pruning || round < 10; round++) {
            const batch = await worker.insertMany(
              Array.from({ length: 20 }, (_, i) => ({ machine: Live, args: { n: round * 20 + i } })),
            );
            inserted.push(...batch.map((r) => r.id));
            await new Promise((resolve) => setTimeout(resolve, 100));
          }
        })();
        const results = await Promise.all(clients.map((c) => c.prune()));
        await eventually(
          "every old terminal row to be gone",
          async () => {
            const { rows } = await pool.query("select count(*)::int as n from gen_durable.instances where id <= $1", [
              N,
            ]);
            return rows[0].n === 0;
          },
          240_000,
        );
        pruning = false;
        await load;
        for (const id of inserted) expect((await worker.wait(id, { timeout: 60_000 })).status).toBe("done");
        await worker.stop();

        const byClients = results.reduce((sum, r) => sum + r.instances, 0);
        // Each instance has 6 rows: whatever the loop deleted divides into instances exactly.
        expect(loopRows % 6).toBe(0);
        expect(byClients + loopRows / 6).toBe(N);
        for (const r of results) {
          expect(r.transitions).toBe(3 * r.instances);
          expect(r.signals).toBe(2 * r.instances);
        }
        const left = await pool.query(
          `select (select count(*) from gen_durable.transitions where instance_id <= $1)::int as transitions,
                (select count(*) from gen_durable.signals where instance_id <= $1)::int as signals,
                (select count(*) from gen_durable.instances where status in ('awaiting', 'joining'))::int as live,
                (select count(*) from gen_durable.instances where machine = 'LiveWork' and status = 'done')::int as work`,
          [N],
        );
        expect(left.rows[0]).toEqual({ transitions: 0, signals: 0, live: 1000, work: inserted.length });
        expect(errors).toEqual([]);
        // A backend flushes its statistics when it exits at the latest: once the engines'
        // connections are gone, a deadlock any of them saw is in pg_stat_database.
        for (const c of clients) await c.stop();
        await eventually("the engines' backends to exit", async () => {
          const { rows } = await pool.query(
            "select count(*)::int as n from pg_stat_activity where datname = current_database() and pid <> pg_backend_pid()",
          );
          return rows[0].n <= pool.totalCount - 1;
        });
        expect(await deadlocks()).toBe(deadlocksBefore);
      } finally {
        for (const e of engines) await e.stop().catch(() => {});
        await pool.end();
        // pool.end() resolves before its connections are closed: dropDatabase waits for them.
        await dropDatabase(admin, name);
        await admin.end();
      }
    },
  );
});
