// Lock ordering: cancels, step completions (group commits, awaits timing out), the reaper
// taking back lapsed leases, and the GC pruning what finished, all on the same 1,000 ids at once, in a
// database of the test's own with deadlock_timeout = 100ms (deadlocks are found fast and counted).
// The server's deadlock counter for that database must not move, no caller may see a 40P01, and each
// instance ends exactly once: done by its worker or cancelled by a caller, never both, never neither.
// RELIABILITY_FULL=1 runs 5 rounds of 1,000 instead of one.
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, GenDurable, InstanceTerminatedError, migrate, UnknownInstanceError } from "../../src/index.js";
import { createDatabase, eventually } from "../support/db.js";

const ROUNDS = process.env.RELIABILITY_FULL === "1" ? 5 : 1;
const IDS = 1_000;
const SCHEMA = "locks";

const Hammered = defineMachine({
  name: "Hammered",
  queue: "hammer",
  state: z.object({ n: z.number() }),
  steps: {
    start: async (ctx) => {
      await new Promise((resolve) => setTimeout(resolve, ctx.state.n % 20));
      if (ctx.state.n % 4 === 0) return ctx.await("never", "finish", ctx.state, { timeout: 20, onTimeout: "finish" });
      return ctx.next("finish", ctx.state);
    },
    finish: (ctx) => ctx.done(ctx.state.n),
  },
});

let db: Awaited<ReturnType<typeof createDatabase>>;
let side: pg.Client;

async function deadlocks(): Promise<number> {
  await side.query("select pg_stat_clear_snapshot()");
  const { rows } = await side.query<{ n: string }>("select deadlocks as n from pg_stat_database where datname = $1", [
    db.name,
  ]);
  return Number(rows[0]!.n);
}

beforeAll(async () => {
  db = await createDatabase("rel_locks");
  const admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  await admin.query(`alter database ${db.name} set deadlock_timeout = '100ms'`);
  await admin.end();
  await migrate({ connectionString: db.url, schema: SCHEMA });
  side = new pg.Client({ connectionString: db.url });
  await side.connect();
  const { rows } = await side.query("show deadlock_timeout");
  expect(rows[0].deadlock_timeout).toBe("100ms");
});

afterAll(async () => {
  await side?.end();
  await db?.drop();
});

describe("cancel, complete, reaper and GC on the same ids", () => {
  it(`${ROUNDS} round(s) of ${IDS} ids: no deadlock, exactly one terminal state each`, async () => {
    const before = await deadlocks();
    const errors: string[] = [];
    const options = {
      connectionString: db.url,
      schema: SCHEMA,
      pollInterval: 50,
      reaperInterval: "20ms",
      gcInterval: "50ms",
      retention: 0,
    } as const;
    const workers = [0, 1].map(
      (i) =>
        new GenDurable({ ...options, nodeId: `w${i}`, queues: { hammer: 20 }, machines: [Hammered], poolSize: 10 }),
    );
    const client = new GenDurable({ ...options, poolSize: 10 });
    const done = new Map<string, number>();
    const cancelled = new Map<string, number>();
    for (const engine of [...workers, client]) {
      engine.on("engine:error", ({ error }) => errors.push(String((error as Error)?.message ?? error)));
      engine.on("instance:done", ({ id }) => done.set(id, (done.get(id) ?? 0) + 1));
      // Emitted by the call that cancelled it; cancelling a cancelled instance is a no-op, without one.
      engine.on("instance:cancelled", ({ id }) => cancelled.set(id, (cancelled.get(id) ?? 0) + 1));
      await engine.start();
    }
    let cancelRefused = 0;
    let leasesLapsed = 0;
    let pruned = 0;
    const t0 = performance.now();
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const ids = (
          await client.insertMany(Array.from({ length: IDS }, (_, n) => ({ machine: Hammered, state: { n } })))
        ).map((r) => r.id);
        let live = true;
        const pick = () => ids[Math.floor(Math.random() * ids.length)]!;
        // Cancels from 4 callers, at random ids of the round.
        const cancels = Array.from({ length: 4 }, async () => {
          while (live) {
            const id = pick();
            try {
              await client.cancel(id, "hammer");
            } catch (error) {
              if (!(error instanceof InstanceTerminatedError || error instanceof UnknownInstanceError)) throw error;
              cancelRefused++;
            }
          }
        });
        // Leases lapsing under running steps, one row per statement, so that the reaper takes them back
        // while their workers complete them.
        const lapses = (async () => {
          while (live) {
            const { rowCount } = await side.query(
              `update ${SCHEMA}.instances set lease_expires_at = now() - interval '1 second'
               where id = (select id from ${SCHEMA}.instances where status = 'running' order by random() limit 1)
                 and status = 'running'`,
            );
            leasesLapsed += rowCount ?? 0;
          }
        })();
        // A caller pruning too, besides each engine's GC loop.
        const prunes = (async () => {
          while (live) pruned += (await client.prune({ olderThan: 0 })).instances ?? 0;
        })();
        const settled = async () => {
          const { rows } = await side.query<{ n: number }>(
            `select count(*)::int as n from ${SCHEMA}.instances
             where id = any($1::bigint[]) and status not in ('done', 'failed', 'cancelled')`,
            [ids],
          );
          return rows[0]!.n === 0;
        };
        const deadline = Date.now() + 240_000;
        while (!(await settled())) {
          if (Date.now() > deadline) throw new Error("instances still live after 240 s");
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        live = false;
        await Promise.all([...cancels, lapses, prunes]);
        // A worker emits instance:done once its commit's reply is back: the rows can read done first.
        // (A cancel emits instance:cancelled before cancel() returns: those are all in.)
        const unreported = () => ids.filter((id) => (done.get(id) ?? 0) + (cancelled.get(id) ?? 0) === 0);
        await eventually("an instance:done or instance:cancelled for each instance", () => {
          const missing = unreported();
          if (missing.length > 0)
            throw new Error(`none yet for ${missing.length}, e.g. ${missing.slice(0, 5).join(", ")}`);
          return true;
        });
        for (const id of ids) {
          const ends = (done.get(id) ?? 0) + (cancelled.get(id) ?? 0);
          expect(ends, `instance ${id}: done ${done.get(id) ?? 0}, cancelled ${cancelled.get(id) ?? 0}`).toBe(1);
        }
      }
    } finally {
      // Stopping ends their sessions, which flushes each session's statistics (its deadlock count).
      for (const engine of [...workers, client]) await engine.stop();
    }
    const seconds = (performance.now() - t0) / 1000;
    const after = await deadlocks();
    const deadlockErrors = errors.filter((m) => /deadlock/i.test(m));
    console.log(
      `${ROUNDS * IDS} instances in ${seconds.toFixed(1)} s: ${[...done.values()].length} done, ` +
        `${cancelled.size} cancelled (${cancelRefused} cancels refused as done or pruned), ${leasesLapsed} ` +
        `leases lapsed under running steps, ${pruned} pruned by prune(); deadlocks (pg_stat_database): ` +
        `${after - before}; engine errors: ${errors.length} (${deadlockErrors.length} deadlocks)`,
    );
    expect(after - before).toBe(0);
    expect(deadlockErrors).toEqual([]);
  }, 900_000);

  it("the deadlock counter it reads does count a deadlock in that database", async () => {
    const before = await deadlocks();
    await side.query("create table public.pair (id int primary key); insert into public.pair values (1), (2)");
    const [a, b] = [new pg.Client({ connectionString: db.url }), new pg.Client({ connectionString: db.url })];
    await Promise.all([a.connect(), b.connect()]);
    await a.query("begin; update public.pair set id = id where id = 1");
    await b.query("begin; update public.pair set id = id where id = 2");
    const outcomes = await Promise.allSettled([
      a.query("update public.pair set id = id where id = 2"),
      b.query("update public.pair set id = id where id = 1"),
    ]);
    expect(
      outcomes.filter((o) => o.status === "rejected").map((o) => (o as PromiseRejectedResult).reason.code),
    ).toEqual(["40P01"]);
    // Ending the sessions flushes their statistics.
    await Promise.all([a.end(), b.end()]);
    const deadline = Date.now() + 20_000;
    while ((await deadlocks()) === before && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
    expect((await deadlocks()) - before).toBe(1);
  });
});
