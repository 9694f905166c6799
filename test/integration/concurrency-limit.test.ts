// A concurrency key with a limit of N runs up to N steps of its instances at once, across nodes:
// sampled from a side connection while two engines work, and from each run's interval by the
// database clock. A key of limit 1 still never overlaps; a cancelled step keeps its slot.
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, migrate } from "../../src/index.js";
import { flowQueries } from "../../src/sql/flow.js";
import { MIGRATIONS } from "../../src/sql/migrations.generated.js";
import { CREATED_MARK, lifecycleQueries } from "../../src/sql/schema-lifecycle.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

/** Records the run's interval by the database clock, so overlaps are counted in SQL. */
async function recordRun(key: string, id: string, ms: number): Promise<void> {
  const { rows } = await db.pool.query<{ run: string }>(
    `insert into ${s}.runs (key, instance_id) values ($1, $2) returning run::text`,
    [key, id],
  );
  await new Promise((resolve) => setTimeout(resolve, ms));
  await db.pool.query(`update ${s}.runs set ended_at = clock_timestamp() where run = $1`, [rows[0]!.run]);
}

const args = z.object({ key: z.string(), ms: z.number() });
const Three = defineJob({
  name: "Three",
  queue: "limits",
  args,
  concurrency: { key: (a) => `three:${a.key}`, limit: 3 },
  perform: (a, ctx) => recordRun(`three:${a.key}`, ctx.id, a.ms),
});
const One = defineJob({
  name: "One",
  queue: "limits",
  args,
  concurrency: { key: (a) => `one:${a.key}` },
  perform: (a, ctx) => recordRun(`one:${a.key}`, ctx.id, a.ms),
});
/** Blocks until the test opens its gate; ignores ctx.abortSignal on purpose. */
const gates = new Map<string, () => void>();
const Gated = defineJob({
  name: "Gated",
  queue: "limits",
  args: z.object({ gate: z.string() }),
  concurrency: { key: () => "gated", limit: 2 },
  perform: (a) => new Promise<void>((resolve) => gates.set(a.gate, resolve)),
});

const machines = [Three, One, Gated];
const nodeA = db.engine({ queues: { limits: 8 }, machines, nodeId: "node-a", pollInterval: 100 });
const nodeB = db.engine({ queues: { limits: 8 }, machines, nodeId: "node-b", pollInterval: 100 });
const client = db.engine({ machines });

beforeAll(async () => {
  await db.pool.query(
    `create table ${s}.runs (run bigserial primary key, key text not null, instance_id bigint not null,
       started_at timestamptz not null default clock_timestamp(), ended_at timestamptz)`,
  );
  await Promise.all([nodeA.start(), nodeB.start(), client.start()]);
});
afterAll(() => {
  for (const open of gates.values()) open();
});

/** Samples the running steps per key from its own connection until `until` settles; returns the most seen per key. */
async function sampleRunning(prefix: string, until: Promise<unknown>): Promise<Map<string, number>> {
  const side = new pg.Client({ connectionString: db.url });
  await side.connect();
  const most = new Map<string, number>();
  let settled = false;
  void until.finally(() => (settled = true));
  try {
    while (!settled) {
      const { rows } = await side.query<{ key: string; n: number }>(
        `select concurrency_key as key, count(*)::int as n from ${s}.instances
         where status = 'running' and concurrency_key like $1 group by 1`,
        [`${prefix}%`],
      );
      for (const { key, n } of rows) most.set(key, Math.max(most.get(key) ?? 0, n));
    }
  } finally {
    await side.end();
  }
  return most;
}

/** The most runs of one key whose intervals (database clock) contain a common moment, per key. */
async function mostOverlapping(prefix: string): Promise<Map<string, number>> {
  const { rows } = await db.pool.query<{ key: string; n: number }>(
    `select a.key, max(c.n)::int as n from ${s}.runs a cross join lateral (
       select count(*) as n from ${s}.runs b
       where b.key = a.key and b.started_at <= a.started_at and a.started_at < coalesce(b.ended_at, 'infinity')
     ) c where a.key like $1 group by a.key`,
    [`${prefix}%`],
  );
  return new Map(rows.map((r) => [r.key, r.n]));
}

async function runAll(machine: typeof Three | typeof One, count: number): Promise<Map<string, number>> {
  const items = Array.from({ length: count }, (_, i) => ({ machine, args: { key: `k${i % 5}`, ms: 15 } }));
  const ids = (await client.insertMany(items)).map((r) => r.id);
  const done = Promise.all(ids.map((id) => client.wait(id, { timeout: 60_000 })));
  const sampled = await sampleRunning(machine === Three ? "three:" : "one:", done);
  for (const finished of await done) expect(finished.status).toBe("done");
  return sampled;
}

describe("concurrency limits", () => {
  it(
    "two engines never run more than 3 steps of a key of limit 3 at once (200 instances, 5 keys)",
    {
      timeout: 90_000,
    },
    async () => {
      const sampled = await runAll(Three, 200);
      expect([...sampled.values()].every((n) => n <= 3)).toBe(true);
      const overlapping = await mostOverlapping("three:");
      expect(overlapping.size).toBe(5);
      expect(
        [...overlapping.values()].every((n) => n <= 3),
        JSON.stringify([...overlapping]),
      ).toBe(true);
      // Each key ran more than one step at a time at some point.
      expect(Math.max(...overlapping.values())).toBeGreaterThan(1);
      const { rows: keys } = await db.pool.query(
        `select key, holders from ${s}.concurrency_keys where key like 'three:%' and (cardinality(holders) > 0 or run_at is not null)`,
      );
      expect(keys).toEqual([]);
    },
  );

  it(
    "a key of limit 1 still never overlaps across two engines (200 instances, 5 keys)",
    { timeout: 90_000 },
    async () => {
      const sampled = await runAll(One, 200);
      expect([...sampled.values()].every((n) => n <= 1)).toBe(true);
      const overlapping = await mostOverlapping("one:");
      expect(overlapping.size).toBe(5);
      expect([...overlapping.values()]).toEqual([1, 1, 1, 1, 1]);
    },
  );

  it("the database refuses a step beyond the key's limit whatever the caller", async () => {
    const later = new Date(Date.now() + 3_600_000);
    const rows = await client.insertMany(
      Array.from({ length: 4 }, () => ({ machine: Three, args: { key: "guard", ms: 1 }, runAt: later })),
    );
    const ids = rows.map((r) => r.id);
    await db.pool.query(`update ${s}.instances set status = 'running' where id = any($1::bigint[])`, [ids.slice(0, 3)]);
    await expect(db.pool.query(`update ${s}.instances set status = 'running' where id = $1`, [ids[3]])).rejects.toThrow(
      /concurrency key "three:guard" would run 4 steps at once, over its limit of 3/,
    );
    await db.pool.query(`update ${s}.instances set status = 'cancelled' where id = any($1::bigint[])`, [ids]);
  });

  it("the reaper frees only the slots of cancelled steps whose lease expired", async () => {
    const later = new Date(Date.now() + 3_600_000);
    const rows = await client.insertMany(
      Array.from({ length: 3 }, () => ({ machine: Three, args: { key: "reaped", ms: 1 }, runAt: later })),
    );
    const [gone, settling, running] = rows.map((r) => r.id);
    await db.pool.query(`update ${s}.instances set status = 'running' where id = any($1::bigint[])`, [
      [gone, settling, running],
    ]);
    // Cancelled mid-step: "gone" lost its node (lease expired), "settling" is still within its lease.
    await db.pool.query(
      `update ${s}.instances set status = 'cancelled',
         lease_expires_at = now() + case when id = $1 then interval '-1 second' else interval '1 hour' end
       where id = any($2::bigint[])`,
      [gone, [gone, settling]],
    );
    const holders = async () =>
      (await db.pool.query(`select holders::text[] from ${s}.concurrency_keys where key = 'three:reaped'`)).rows[0]
        .holders;
    // The engines' own reapers may get there first: either way, only "gone" goes.
    await flowQueries(db.schema).freeCancelledHolds(db.pool, { limit: 100 });
    expect(await holders()).toEqual([settling, running]);
    await db.pool.query(`update ${s}.instances set status = 'cancelled' where id = $1`, [running]);
    await db.pool.query(`update ${s}.instances set lease_expires_at = null where id = any($1::bigint[])`, [
      [settling, running],
    ]);
    await flowQueries(db.schema).freeCancelledHolds(db.pool, { limit: 100 });
    expect(await holders()).toEqual([]);
  });

  it(
    "fills exactly N slots, explains the wait, and a cancelled step keeps its slot until it settles",
    {
      timeout: 30_000,
    },
    async () => {
      const ids: string[] = [];
      for (const gate of ["a", "b", "c"]) ids.push((await client.insert(Gated, { args: { gate } })).id);
      await eventually("two running", () => gates.size === 2);
      const running = await db.pool.query<{ id: string }>(
        `select id::text from ${s}.instances where concurrency_key = 'gated' and status = 'running' order by id`,
      );
      expect(running.rows.map((r) => r.id)).toEqual(ids.slice(0, 2));
      const why = await client.explain(ids[2]!);
      expect(why.reasons).toContain(
        `concurrency key "gated" is at its limit of 2 steps at once, held by instances ${ids[0]}, ${ids[1]}`,
      );
      expect(why.details.concurrencyKey).toEqual({ key: "gated", heldBy: ids[0], heldByAll: ids.slice(0, 2) });

      // Cancelled, "a" ignores its abort and runs on: it keeps its slot, so "c" still waits.
      await client.cancel(ids[0]!, "stop");
      await claims(nodeA, 5);
      expect(gates.has("c")).toBe(false);
      gates.get("a")!();
      await eventually("c running once a settled", () => gates.has("c"));
      gates.get("b")!();
      gates.get("c")!();
      for (const id of ids.slice(1)) expect((await client.wait(id, { timeout: 10_000 })).status).toBe("done");
    },
  );
});

describe("upgrading a schema whose keys are held", () => {
  it("keeps each key's holder, with a limit of 1", async () => {
    const schema = `${db.schema}_upgrade`;
    const q = `"${schema}"`;
    const version = MIGRATIONS.findIndex((m) => m.name === "concurrency_limit");
    expect(version).toBeGreaterThan(0);
    const lifecycle = lifecycleQueries(schema);
    await lifecycle.createSchema(db.pool);
    try {
      await lifecycle.mark(CREATED_MARK)(db.pool);
      await lifecycle.createMigrationsTable(db.pool);
      for (const m of MIGRATIONS.slice(0, version)) {
        await lifecycle.apply(m.id)(db.pool);
        await lifecycle.record(db.pool, { id: m.id, name: m.name });
      }
      const { rows } = await db.pool.query<{ id: string }>(
        `insert into ${q}.instances (machine, step, state, queue, concurrency_key)
         select 'J', 'perform', '{}', 'q', 'old' from generate_series(1, 2) returning id::text`,
      );
      const [held, next] = rows.map((r) => r.id);
      await db.pool.query(`update ${q}.instances set status = 'running' where id = $1`, [held]);

      expect(await migrate({ connectionString: db.url, schema })).toEqual(MIGRATIONS.slice(version).map((m) => m.id));
      const key = await db.pool.query(`select holders::text[], max_running from ${q}.concurrency_keys`);
      expect(key.rows).toEqual([{ holders: [held], max_running: 1 }]);
      await expect(db.pool.query(`update ${q}.instances set status = 'running' where id = $1`, [next])).rejects.toThrow(
        /over its limit of 1/,
      );
      await db.pool.query(`update ${q}.instances set status = 'done' where id = $1`, [held]);
      await db.pool.query(`update ${q}.instances set status = 'running' where id = $1`, [next]);
      const after = await db.pool.query(`select holders::text[] from ${q}.concurrency_keys`);
      expect(after.rows).toEqual([{ holders: [next] }]);
    } finally {
      await db.pool.query(`drop schema ${q} cascade`);
    }
  });
});

/** Resolves after `engine` has made `n` more claims of its queues. */
function claims(engine: ReturnType<typeof db.engine>, n: number): Promise<void> {
  return new Promise((resolve) => {
    let seen = 0;
    const off = engine.on("loop:tick", (tick) => {
      if (tick.loop === "scheduler" && ++seen >= n) {
        off();
        resolve();
      }
    });
  });
}
