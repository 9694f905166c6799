/**
 * Queues: pause/resume seen by every node, a global limit across nodes,
 * priority order (lower first, FIFO among equals), and explain's reasons for
 * work that does not run.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { ConfigError, defineJob, GenDurable, type GenDurable as Engine } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

/** Records its run's interval by the database clock. */
async function perform(args: { ms: number }, ctx: { id: string }): Promise<void> {
  const { rows } = await db.pool.query<{ run: string }>(
    `insert into ${s}.runs (instance_id) values ($1) returning run::text`,
    [ctx.id],
  );
  await new Promise((resolve) => setTimeout(resolve, args.ms));
  await db.pool.query(`update ${s}.runs set ended_at = clock_timestamp() where run = $1`, [rows[0]!.run]);
}
const args = z.object({ ms: z.number() });
const Work = defineJob({ name: "Work", queue: "work", args, perform });
const Limited = defineJob({ name: "Limited", queue: "limited", args, perform });
const Ordered = defineJob({ name: "Ordered", queue: "ordered", args, perform });

const Orphan = defineJob({ name: "Orphan", queue: "work", args: z.object({}), perform: () => "never" });

const queues = { work: 4, limited: { concurrency: 5, global: 3 } };
const nodeA = db.engine({ queues, machines: [Work, Limited], nodeId: "q-a", pollInterval: 100 });
const nodeB = db.engine({ queues, machines: [Work, Limited], nodeId: "q-b", pollInterval: 100 });
const client = db.engine({});

beforeAll(async () => {
  await db.pool.query(
    `create table ${s}.runs (run bigserial primary key, instance_id bigint not null,
       started_at timestamptz not null default clock_timestamp(), ended_at timestamptz)`,
  );
  await Promise.all([nodeA.start(), nodeB.start(), client.start()]);
});

/** Resolves after each engine has made `n` more claims of `queue` (whatever they found). */
function claimsBy(engines: Engine[], queue: string, n: number): Promise<void> {
  return Promise.all(
    engines.map(
      (engine) =>
        new Promise<void>((resolve) => {
          let seen = 0;
          const off = engine.on("loop:tick", (tick) => {
            if (tick.loop === "scheduler" && tick.queue === queue && ++seen >= n) {
              off();
              resolve();
            }
          });
        }),
    ),
  ).then(() => undefined);
}

/** The most runs whose intervals overlap at one moment. */
async function maxParallel(): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(
    `select coalesce(max(n), 0)::int as n from (
       select (select count(*) from ${s}.runs b where b.started_at <= a.started_at and coalesce(b.ended_at, 'infinity') > a.started_at) as n
       from ${s}.runs a) x`,
  );
  return rows[0]!.n;
}

describe("queues", () => {
  it("pauseQueue stops claims on every node; resumeQueue wakes them all", { timeout: 30_000 }, async () => {
    await client.pauseQueue("work");
    expect(await client.pausedQueues()).toEqual(["work"]);
    const ids = (await client.insertMany(Array.from({ length: 10 }, () => ({ machine: Work, args: { ms: 1 } })))).map(
      (r) => r.id,
    );
    // Both nodes claim (they are woken by the inserts and by polling) and find nothing.
    await claimsBy([nodeA, nodeB], "work", 3);
    const { rows } = await db.pool.query<{ n: number }>(`select count(*)::int as n from ${s}.runs`);
    expect(rows[0]!.n).toBe(0);
    const explanation = await client.explain(ids[0]!);
    expect(explanation.reasons).toContain('queue "work" is paused');
    expect(explanation.details.queuePaused).toBe("work");

    await client.resumeQueue("work");
    expect(await client.pausedQueues()).toEqual([]);
    await Promise.all(ids.map((id) => client.wait(id, { timeout: 10_000 })));
  });

  it("steps already running when a queue is paused finish", { timeout: 30_000 }, async () => {
    const { id } = await client.insert(Work, { args: { ms: 300 } });
    await eventually("the step running", async () => (await client.get(id))?.status === "running");
    await client.pauseQueue("work");
    expect((await client.wait(id, { timeout: 10_000 })).status).toBe("done");
    await client.resumeQueue("work");
  });

  it("a global limit caps running steps across nodes, and both nodes take part", { timeout: 60_000 }, async () => {
    await db.pool.query(`truncate ${s}.runs`);
    const started = { a: 0, b: 0 };
    const offs = [
      nodeA.on("step:start", (e) => void (e.machine === "Limited" && started.a++)),
      nodeB.on("step:start", (e) => void (e.machine === "Limited" && started.b++)),
    ];
    const ids = (
      await client.insertMany(Array.from({ length: 40 }, () => ({ machine: Limited, args: { ms: 40 } })))
    ).map((r) => r.id);
    await Promise.all(ids.map((id) => client.wait(id, { timeout: 50_000 })));
    for (const off of offs) off();
    // Per node 5, globally 3: never more than 3 at once, and the limit was reached.
    expect(await maxParallel()).toBe(3);
    expect(started.a + started.b).toBe(40);
    expect(started.a).toBeGreaterThan(0);
    expect(started.b).toBeGreaterThan(0);
  });

  it("runs lower priority numbers first, and equal priorities in insertion order", { timeout: 30_000 }, async () => {
    const single = db.engine({ queues: { ordered: 1 }, machines: [Ordered], nodeId: "q-single", pollInterval: 100 });
    // The order the node starts each instance's first attempt in: an attempt that failed (say, its
    // step's own query refused by a server out of connections) runs again after its backoff, and
    // a table the steps write would show it late.
    const firstStarts: string[] = [];
    single.on("step:start", (e) => void (firstStarts.includes(e.id) || firstStarts.push(e.id)));
    await client.pauseQueue("ordered");
    await single.start();
    // Due since a minute ago, all of them: a claim is due-checked against its transaction's start
    // (now()), and one the node's poll began before the last inserts, whose statement ran after the
    // resume, saw those rows but not yet due (run_at = their insert's now()) and started the others
    // first (seen once on a loaded CI host).
    const runAt = new Date(Date.now() - 60_000);
    const inserted = [];
    for (const priority of [3, 1, 2, 1, 3, 0, 2, 1])
      inserted.push({ priority, id: (await client.insert(Ordered, { args: { ms: 1 }, priority, runAt })).id });
    await client.resumeQueue("ordered");
    await Promise.all(inserted.map((r) => client.wait(r.id, { timeout: 10_000 })));
    const expected = [...inserted]
      .sort((a, b) => a.priority - b.priority || Number(BigInt(a.id) - BigInt(b.id)))
      .map((r) => r.id);
    expect(firstStarts).toEqual(expected);
    await single.stop();
  });

  it("explain says when no started node runs an instance's machine", async () => {
    const { id } = await client.insert(Orphan, { args: {} });
    const explanation = await client.explain(id);
    expect(explanation.reasons).toContain('no started node runs machine "Orphan" on queue "work"');
    expect(explanation.details.noNode).toEqual({ machine: "Orphan", queue: "work" });
    await client.cancel(id);
  });

  it("rejects bad queue options and names", async () => {
    const make = (queues: unknown) => () =>
      new GenDurable({ connectionString: db.url, schema: db.schema, queues: queues as never });
    expect(make({ q: { concurrency: 2, global: 0 } })).toThrow(
      new ConfigError(
        "GenDurable: queues.q.global must be an integer from 1 to 1000000 (running steps across all nodes), got 0",
      ),
    );
    expect(make({ q: { concurrency: 2, globl: 3 } })).toThrow(/globl.*did you mean "global"/);
    await expect(client.pauseQueue(" work")).rejects.toThrow(/pauseQueue: queue must be a non-empty string/);
  });
});
