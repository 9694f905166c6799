/**
 * Cron across processes: three engine processes run the same `* * * * * *`
 * entry for CRON_TEST_SECONDS (default 15; the full run is 60). Every
 * second tick in the run must have inserted exactly one instance — not zero,
 * not one per node — also after one node is SIGKILLed halfway through.
 */
import { describe, expect, it } from "vitest";
import { eventually, useTestDatabase } from "../support/db.js";
import { Fleet, forkChild, useChildren } from "../support/worker-process.js";

useChildren();
const db = await useTestDatabase(import.meta.url);

const SECONDS = Number(process.env.CRON_TEST_SECONDS ?? 15);
const NODES = 3;

describe("cron on several nodes", () => {
  it(
    `inserts exactly one instance per tick over ${SECONDS} s on ${NODES} processes, one of them killed halfway`,
    { timeout: 60_000 + SECONDS * 3000 },
    async () => {
      if (!Number.isInteger(SECONDS) || SECONDS < 4)
        throw new Error(`CRON_TEST_SECONDS must be an integer of at least 4, got ${process.env.CRON_TEST_SECONDS}`);
      const T = `"${db.schema}"`;
      const fleet = new Fleet(
        (slot, generation) =>
          forkChild(new URL("./fixtures/cron-worker.ts", import.meta.url), {
            name: `gd-cron${slot}-${generation}`,
            env: { DATABASE_URL: db.url, GD_SCHEMA: db.schema },
          }),
        { respawn: false },
      );
      const ticks = async () =>
        (
          await db.pool.query<{
            tick_at: Date;
            instance_id: string;
            machine: string | null;
            state: unknown;
            status: string | null;
          }>(
            `select t.tick_at, t.instance_id::text, i.machine, i.state, i.status
           from ${T}.cron_ticks t left join ${T}.instances i on i.id = t.instance_id where t.name = 'every-second' order by t.tick_at`,
          )
        ).rows;
      try {
        await fleet.start(NODES);
        // Count from the first tick after every node is up: from then on all three race for each tick.
        const { rows } = await db.pool.query<{ now: Date }>("select now()");
        const from = rows[0]!.now.getTime();
        const inRun = async () => (await ticks()).filter((t) => t.tick_at.getTime() > from);
        await eventually(
          `${Math.floor(SECONDS / 2)} ticks`,
          async () => (await inRun()).length >= Math.floor(SECONDS / 2),
          SECONDS * 2000 + 30_000,
        );
        // A node dies mid-run (SIGKILL: no graceful stop); the other two carry on.
        await fleet.kill(fleet.slots[0]!);
        await eventually(`${SECONDS} ticks`, async () => (await inRun()).length >= SECONDS, SECONDS * 2000 + 30_000);
        const run = (await inRun()).slice(0, SECONDS);
        // Let the instances of the run finish, then stop the nodes.
        await eventually("the run's instances done", async () => {
          const { rows: done } = await db.pool.query<{ n: number }>(
            `select count(*)::int as n from ${T}.instances where id = any($1::bigint[]) and status = 'done'`,
            [run.map((t) => t.instance_id)],
          );
          return done[0]!.n === run.length;
        });
        await fleet.stop();
        const last = run[run.length - 1]!.tick_at.getTime();
        const final = (await inRun()).filter((t) => t.tick_at.getTime() <= last);

        expect(fleet.fatal, fleet.outputs()).toEqual([]);
        const errors = fleet.received.filter((m) => m.type === "engine-error");
        expect(errors, JSON.stringify(errors, null, 2)).toEqual([]);

        // One row per second, consecutive: no tick skipped, none twice (the key forbids it; this checks nothing was lost).
        expect(final).toHaveLength(SECONDS);
        const times = final.map((t) => t.tick_at.getTime());
        for (let i = 1; i < times.length; i++)
          expect(times[i]! - times[i - 1]!, `gap after ${final[i - 1]!.tick_at.toISOString()}`).toBe(1000);
        // Each tick names its own instance, which exists and is the configured job.
        expect(new Set(final.map((t) => t.instance_id)).size).toBe(SECONDS);
        for (const tick of final)
          expect(tick).toMatchObject({ machine: "CronBeat", state: { every: "second" }, status: "done" });

        // And no instance exists without its tick: the job's instances are exactly the ticks' (whole history, not only the run).
        const all = await ticks();
        const { rows: count } = await db.pool.query<{ n: number }>(
          `select count(*)::int as n from ${T}.instances where machine = 'CronBeat'`,
        );
        expect(count[0]!.n).toBe(all.length);
        // What the nodes say they inserted never exceeds it (a node killed between its commit and its report may under-report).
        const reported = fleet.received
          .filter((m) => m.type === "fired")
          .reduce((sum, m) => sum + (m.count as number), 0);
        expect(reported).toBeLessThanOrEqual(all.length);
        expect(reported).toBeGreaterThan(0);
        // More than one node won ticks: they really raced (a single winner would also pass the checks above).
        const winners = new Set(fleet.received.filter((m) => m.type === "fired").map((m) => m.worker));
        console.log(`cron-nodes: ${all.length} ticks, won by ${[...winners].join(", ")}`);
      } finally {
        await fleet.stop();
      }
    },
  );
});
