// The scheduler: per-node concurrency, claim order, due times, and a claim plan that ignores finished rows.
import pg from "pg";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine, GenDurable } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

let active = 0;
let peak = 0;
const releases: Array<() => void> = [];
const Limited = defineJob({
  name: "Limited",
  queue: "limited",
  args: z.object({}),
  perform: async () => {
    active++;
    peak = Math.max(peak, active);
    await new Promise<void>((resolve) => releases.push(resolve));
    active--;
    return null;
  },
});

const order: number[] = [];
const Ordered = defineJob({
  name: "Ordered",
  queue: "ordered",
  args: z.object({ n: z.number() }),
  perform: async (args) => {
    order.push(args.n);
    return null;
  },
});

const Later = defineMachine({
  name: "Later",
  queue: "later",
  state: z.object({}),
  steps: { start: (ctx) => ctx.done() },
});

let gate: Promise<void> = Promise.resolve();
const keyedRuns: string[] = [];
const Keyed = defineJob({
  name: "Keyed",
  queue: "keyed",
  args: z.object({ name: z.string() }),
  perform: async (args) => {
    keyedRuns.push(args.name);
    if (args.name === "first") await gate;
    return null;
  },
});

describe("scheduler", () => {
  it("never runs more than the queue's concurrency on a node", async () => {
    const engine = db.engine({ queues: { limited: 3 }, machines: [Limited] });
    await engine.start();
    const ids = (await engine.insertMany(Array.from({ length: 10 }, () => ({ machine: Limited, args: {} })))).map(
      (r) => r.id,
    );
    let finished = 0;
    while (finished < 10) {
      await eventually("a step waiting", () => releases.length > 0);
      expect(active).toBeLessThanOrEqual(3);
      releases.shift()!();
      finished++;
    }
    for (const id of ids) expect((await engine.wait(id, { timeout: 5000 })).status).toBe("done");
    expect(peak).toBe(3);
    await engine.stop();
  });

  it("fills a free slot with keyed work while the previous outcome is still committing", async () => {
    // A slot freed by a settled step must take the next key's row at once (claimed then, or
    // ahead into the buffer), not idle until the settled step's outcome has committed.
    const engine = db.engine({ queues: { keyed: 1 }, machines: [Keyed] });
    let open!: () => void;
    gate = new Promise<void>((resolve) => (open = resolve));
    const holder = await db.pool.connect();
    try {
      await engine.start();
      await engine.insert(Keyed, { args: { name: "first" }, concurrencyKey: "a" });
      await eventually("the first step running", () => keyedRuns.includes("first"));
      await engine.insert(Keyed, { args: { name: "second" }, concurrencyKey: "b" });
      // The first outcome's commit locks key "a" first (lock_keys): held here, it cannot commit.
      await holder.query("begin");
      await holder.query(`select ${db.schema}.lock_keys(array['a'])`);
      open();
      await eventually("the second key's step running while the first commit waits", () =>
        keyedRuns.includes("second"),
      );
      const { rows } = await holder.query(
        `select status from ${db.schema}.instances where machine = 'Keyed' order by id`,
      );
      expect(rows.map((r) => r.status)).toEqual(["running", "running"]);
      await holder.query("commit");
      await eventually("both done", async () => {
        const done = await db.pool.query(
          `select count(*)::int as n from ${db.schema}.instances where machine = 'Keyed' and status = 'done'`,
        );
        return done.rows[0].n === 2;
      });
    } finally {
      await holder.query("rollback").catch(() => {});
      holder.release();
      await engine.stop();
    }
  });

  it("runs an instance inserted into another queue than its machine's default", async () => {
    const engine = db.engine({ queues: { later: 1, limited: 1 }, machines: [Later, Limited] });
    await engine.start();
    const { id } = await engine.insert(Later, { state: {}, queue: "limited" });
    expect(await engine.wait(id, { timeout: 5000 })).toMatchObject({ status: "done", queue: "limited" });
    await engine.stop();
  });

  it("claims in priority, then due-time, then insertion order", async () => {
    const client = db.engine();
    await client.start();
    const past = (s: number) => new Date(Date.now() - s * 1000);
    await client.insertMany([
      { machine: Ordered, args: { n: 4 }, priority: 5 },
      { machine: Ordered, args: { n: 3 }, priority: 0, runAt: past(1) },
      { machine: Ordered, args: { n: 1 }, priority: -1 },
      { machine: Ordered, args: { n: 2 }, priority: 0, runAt: past(10) },
      { machine: Ordered, args: { n: 5 }, priority: 5 },
    ]);
    const engine = db.engine({ queues: { ordered: 1 }, machines: [Ordered] });
    await engine.start();
    await eventually("all five ran", () => order.length === 5);
    expect(order).toEqual([1, 2, 3, 4, 5]);
    await engine.stop();
  });

  it("does not run an instance before its due time, by the database clock", async () => {
    const engine = db.engine({ queues: { later: 2 }, machines: [Later], pollInterval: 50 });
    await engine.start();
    const { id } = await engine.insert(Later, { state: {}, delay: 300 });
    const done = await engine.wait(id, { timeout: 5000 });
    const { rows } = await db.pool.query(
      `select updated_at - inserted_at >= interval '300 ms' as late_enough from ${db.schema}.instances where id = $1`,
      [id],
    );
    expect(done.status).toBe("done");
    expect(rows[0].late_enough).toBe(true);
    await engine.stop();
  });

  it("claims through the partial index, so finished rows do not cost anything", async () => {
    await db.pool.query(
      `insert into ${db.schema}.instances (machine, step, state, status, queue)
       select 'Old', 'start', '{}', 'done', 'ordered' from generate_series(1, 20000)`,
    );
    await db.pool.query(`analyze ${db.schema}.instances`);
    const conn = await db.pool.connect();
    try {
      await conn.query("begin");
      // The claim's statement, as the function claim runs it: with the generic plan it keeps for the session.
      const { rows: source } = await conn.query<{ src: string }>(
        `select prosrc as src from pg_proc where proname = 'claim' and pronamespace = $1::regnamespace`,
        [db.schema],
      );
      const statement = /return query([\s\S]*);\s*end\s*$/.exec(source[0]!.src)![1]!;
      await conn.query(`prepare claim_plan(text, text[], integer, text, float8, integer, integer) as ${statement}`);
      await conn.query("set local plan_cache_mode = force_generic_plan");
      const { rows } = await conn.query(
        `explain execute claim_plan('ordered', array['Ordered'], 10, 'n', 1000, null, 10)`,
      );
      const plan = rows.map((r) => r["QUERY PLAN"]).join("\n");
      expect(plan).toMatch(/Index Scan using instances_claim/);
      expect(plan).toMatch(/instances_claim/);
      expect(plan).not.toMatch(/Seq Scan on instances/);
      await conn.query("rollback");
    } finally {
      conn.release();
    }
  });

  it(
    "keeps one instance's events in order when a commit's reply arrives after the next step's claim",
    { timeout: 30_000 },
    async () => {
      // The replies to group commits are held back 300 ms after the database has
      // committed: the next step of the instance is claimed (by the 20 ms poll)
      // before its node has heard that the previous step committed.
      class SlowCommitReplies extends pg.Pool {
        override query(...args: unknown[]): never {
          const config = args[0] as { text?: string };
          const result = (super.query as (...a: unknown[]) => Promise<unknown>).apply(this, args);
          if (typeof config?.text !== "string" || !config.text.includes("won as (")) return result as never;
          return result.then(async (value) => {
            await new Promise((resolve) => setTimeout(resolve, 300));
            return value;
          }) as never;
        }
      }
      const Chain = defineMachine({
        name: "Chain",
        queue: "chain",
        state: z.object({ n: z.number() }),
        steps: {
          start: (ctx) => (ctx.state.n < 4 ? ctx.next("start", { n: ctx.state.n + 1 }) : ctx.done(ctx.state.n)),
        },
      });
      const pool = new SlowCommitReplies({ connectionString: db.url, max: 6 });
      const engine = new GenDurable({
        pool,
        schema: db.schema,
        queues: { chain: 4 },
        machines: [Chain],
        pollInterval: 20,
      });
      const events: string[] = [];
      engine.on("step:start", (e) => events.push(`start ${e.attempt}`));
      engine.on("step:stop", (e) => events.push(`stop ${e.outcome}`));
      try {
        await engine.start();
        const { id } = await engine.insert(Chain, { state: { n: 1 } });
        expect((await engine.wait(id, { timeout: 20_000 })).result).toBe(4);
        // wait() reads the database, which knows before this node hears the last reply.
        await eventually("the last step:stop", () => events.includes("stop done"));
        expect(events).toEqual([
          "start 1",
          "stop next",
          "start 1",
          "stop next",
          "start 1",
          "stop next",
          "start 1",
          "stop done",
        ]);
      } finally {
        await engine.stop();
        await pool.end();
      }
    },
  );
});
