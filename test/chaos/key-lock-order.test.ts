/**
 * Every path that changes keyed instances, at once, on a handful of keys: a caller inserting keyed
 * batches in its own transactions, group commits, awaits timing out, signals resuming awaits,
 * fan-outs and their joins, failures and retries, cancels of whole trees, the reaper recovering
 * expired leases, and graceful stops releasing rows. None of them may ever deadlock: the server's
 * own deadlock counter for a database of the test's own must stay at zero, and no caller may see
 * a 40P01. KEY_LOCK_SECONDS (default 20) sets how long the load runs.
 */
import pg from "pg";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { GenDurable, defineJob, defineMachine, migrate } from "../../src/index.js";
import { createDatabase, databaseUrl } from "../support/db.js";

const SECONDS = Number(process.env.KEY_LOCK_SECONDS ?? 20);
const KEYS = Array.from({ length: 6 }, (_, i) => `key-${i}`);
const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)]!;
const shuffled = <T>(items: T[]): T[] =>
  items
    .map((item) => [Math.random(), item] as const)
    .sort((a, b) => a[0] - b[0])
    .map(([, item]) => item);

const Child = defineJob({
  name: "KeyLockChild",
  queue: "keyed",
  args: z.object({ n: z.number() }),
  maxAttempts: 2,
  backoff: { type: "fixed", delay: 0 },
  perform: async (args) => {
    if (args.n % 5 === 0) throw new Error("child fails");
    return args.n;
  },
});

const Keyed = defineMachine({
  name: "KeyLockKeyed",
  queue: "keyed",
  state: z.object({ n: z.number() }),
  maxAttempts: 2,
  backoff: { type: "fixed", delay: 0 },
  steps: {
    start: (ctx) => {
      switch (ctx.state.n % 5) {
        case 0:
          return ctx.await("go", "finish", ctx.state, { timeout: 30, onTimeout: "finish" });
        case 1:
          return ctx.spawn(
            [0, 1, 2].map((i) => ({ machine: Child, args: { n: ctx.state.n + i }, concurrencyKey: pick(KEYS) })),
            "finish",
          );
        case 2:
          throw new Error("fails, to be retried");
        default:
          return ctx.next("finish", ctx.state);
      }
    },
    finish: (ctx) => ctx.done(ctx.state.n),
  },
});

describe("one lock order for concurrency keys", () => {
  it(
    `deadlocks nowhere with every keyed path running at once for ${SECONDS} s`,
    { timeout: SECONDS * 1000 + 120_000 },
    async () => {
      const { name, url: connectionString, drop } = await createDatabase("key_locks");
      const admin = new pg.Client({ connectionString: databaseUrl() });
      await admin.connect();
      const pool = new pg.Pool({ connectionString, max: 6 });
      pool.on("error", () => {});
      const engines = new Set<GenDurable>();
      const seen = {
        callerDeadlocks: 0,
        engineDeadlocks: 0,
        inserted: 0,
        signals: 0,
        cancels: 0,
        retries: 0,
        expired: 0,
        restarts: 0,
        otherErrors: [] as string[],
        deadlockedLoops: [] as string[],
      };
      const isDeadlock = (e: unknown) => (e as { code?: string }).code === "40P01" || /deadlock/i.test(String(e));
      const note = (e: unknown) => {
        if (isDeadlock(e)) seen.callerDeadlocks++;
        else if (seen.otherErrors.length < 10) seen.otherErrors.push(String(e));
      };
      const worker = () => {
        const engine = new GenDurable({
          connectionString,
          queues: { keyed: 8 },
          machines: [Keyed, Child],
          pollInterval: "100ms",
          reaperInterval: "100ms",
          leaseDuration: "3s",
          shutdownGrace: "50ms",
        });
        engine.on("engine:error", ({ loop, error }) => {
          if (!isDeadlock(error)) return;
          seen.engineDeadlocks++;
          seen.deadlockedLoops.push(loop);
        });
        engines.add(engine);
        return engine;
      };
      try {
        await migrate({ connectionString });
        const workers = [worker(), worker()];
        for (const engine of workers) await engine.start();
        const client = new GenDurable({ connectionString });
        engines.add(client);
        await client.start();

        const until = Date.now() + SECONDS * 1000;
        const running = () => Date.now() < until;
        const loops = [
          // A caller inserting keyed batches, in random key order, in its own transactions.
          (async () => {
            let n = 0;
            while (running()) {
              const tx = await pool.connect();
              try {
                await tx.query("begin");
                const batch = shuffled(
                  Array.from({ length: 8 }, () => ({ machine: Keyed, state: { n: n++ }, concurrencyKey: pick(KEYS) })),
                );
                await client.insertMany(batch, { client: tx });
                await tx.query("commit");
                seen.inserted += batch.length;
              } catch (error) {
                await tx.query("rollback").catch(() => {});
                note(error);
              } finally {
                tx.release();
              }
            }
          })(),
          // Signals resuming awaits.
          (async () => {
            while (running()) {
              const { rows } = await pool.query<{ id: string }>(
                `select id::text as id from gen_durable.instances where status = 'awaiting' order by random() limit 5`,
              );
              for (const { id } of rows)
                await client.signal({ id }, "go").then(
                  () => seen.signals++,
                  (e: unknown) => (/terminat|no instance/i.test(String(e)) ? null : note(e)),
                );
              await new Promise((resolve) => setTimeout(resolve, 5));
            }
          })(),
          // Cancels of whole trees, and retries of failed instances.
          (async () => {
            while (running()) {
              const { rows } = await pool.query<{ id: string; status: string }>(
                `(select id::text as id, status from gen_durable.instances where status in ('joining', 'runnable', 'running', 'awaiting') order by random() limit 2)
               union all (select id::text, status from gen_durable.instances where status = 'failed' order by random() limit 4)`,
              );
              for (const { id, status } of rows) {
                if (status === "failed")
                  await client.retry(id).then(
                    () => seen.retries++,
                    (e: unknown) => (/not failed|INVALID_STATE|parent/i.test(String(e)) ? null : note(e)),
                  );
                else
                  await client.cancel(id, "load").then(
                    () => seen.cancels++,
                    (e: unknown) => (/terminat|INSTANCE_TERMINATED/i.test(String(e)) ? null : note(e)),
                  );
              }
              await new Promise((resolve) => setTimeout(resolve, 20));
            }
          })(),
          // Leases that lapse (as when a node freezes): the reaper takes the rows back.
          (async () => {
            while (running()) {
              const { rowCount } = await pool.query(
                `update gen_durable.instances set lease_expires_at = now() - interval '1 second'
               where id in (select id from gen_durable.instances where status = 'running' order by id limit 3 for update skip locked)`,
              );
              seen.expired += rowCount ?? 0;
              await new Promise((resolve) => setTimeout(resolve, 50));
            }
          })(),
          // Graceful stops releasing claimed rows, and fresh nodes taking over.
          (async () => {
            while (running()) {
              await new Promise((resolve) => setTimeout(resolve, 2000));
              const old = workers.shift()!;
              await old.stop();
              engines.delete(old);
              const fresh = worker();
              await fresh.start();
              workers.push(fresh);
              seen.restarts++;
            }
          })(),
        ];
        await Promise.all(loops);
        for (const engine of engines) await engine.stop();
        engines.clear();
        await pool.end();

        // Every backend of the test database gone, so each has reported its statistics.
        const deadline = Date.now() + 20_000;
        while (
          (await admin.query(`select count(*)::int as n from pg_stat_activity where datname = $1`, [name])).rows[0].n >
          0
        ) {
          if (Date.now() > deadline) throw new Error("connections to the test database did not close");
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
        await admin.query("select pg_stat_clear_snapshot()");
        const { rows } = await admin.query<{ deadlocks: number }>(
          `select deadlocks::int from pg_stat_database where datname = $1`,
          [name],
        );
        console.log(
          `key lock order: ${SECONDS} s, ${JSON.stringify({ ...seen, serverDeadlocks: rows[0]!.deadlocks })}`,
        );
        expect(seen.otherErrors).toEqual([]);
        expect(seen.inserted).toBeGreaterThan(0);
        expect({ server: rows[0]!.deadlocks, caller: seen.callerDeadlocks, engine: seen.engineDeadlocks }).toEqual({
          server: 0,
          caller: 0,
          engine: 0,
        });
      } finally {
        for (const engine of engines) await engine.stop().catch(() => {});
        await pool.end().catch(() => {});
        await admin.end();
        await drop();
      }
    },
  );
});
