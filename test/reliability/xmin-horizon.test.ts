/**
 * A long-running transaction holding the xmin horizon: a session opens a REPEATABLE READ
 * transaction, takes its snapshot and stays open while the engine works. Vacuum can remove no row
 * version that died since, so every step leaves dead tuples that stay. Checked: correctness holds
 * (every instance completes, once, with its full history); the vacuum watch names the holding
 * session (pid, application_name) once it has held the horizon past the threshold, with the dead
 * tuples it costs; VACUUM meanwhile leaves the dead tuples, and once the session ends it removes
 * them. On a database of its own: the horizon of a database's tables is its own sessions'.
 *
 * RELIABILITY_FULL=1: 3,000 instances (default: 300).
 */
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { GenDurable, defineMachine, migrate, type EngineEvents } from "../../src/index.js";
import { readVacuumHealth, VacuumWatch } from "../../src/telemetry/table-health.js";
import { createDatabase, eventually } from "../support/db.js";

const INSTANCES = process.env.RELIABILITY_FULL ? 3000 : 300;
const database = await createDatabase("gd_horizon");
const schema = "gd";
await migrate({ connectionString: database.url, schema });
const admin = new pg.Pool({ connectionString: database.url, max: 2, application_name: "horizon-admin" });
admin.on("error", () => {});
const holder = new pg.Client({ connectionString: database.url, application_name: "report-left-open" });
holder.on("error", () => {});

const Steps = defineMachine({
  name: "HorizonSteps",
  state: z.object({ n: z.number() }),
  steps: {
    start: (ctx) => ctx.next("middle", { n: ctx.state.n + 1 }),
    middle: (ctx) => ctx.next("end", { n: ctx.state.n + 1 }),
    end: (ctx) => ctx.done(ctx.state.n),
  },
});
const engine = new GenDurable({ connectionString: database.url, schema, queues: { default: 10 }, machines: [Steps] });
await engine.start();
afterAll(async () => {
  await holder.end().catch(() => {});
  await engine.stop();
  await admin.end();
  await database.drop();
});

async function deadInInstances(): Promise<number> {
  // Statistics reach pg_stat_all_tables within a second or so of each backend's activity.
  return (await readVacuumHealth(admin, schema)).tables.find((t) => t.table === "instances")!.deadTuples;
}

describe("a transaction holding the xmin horizon", () => {
  it(
    "correctness holds, the holder is named, dead tuples stay until it ends",
    async () => {
      await holder.connect();
      await holder.query("begin isolation level repeatable read");
      await holder.query("select 1");
      const { rows: me } = await holder.query<{ pid: number }>("select pg_backend_pid() as pid");
      const pid = me[0]!.pid;

      const ids: string[] = [];
      for (let i = 0; i < INSTANCES; i += 100) {
        const batch = Array.from({ length: Math.min(100, INSTANCES - i) }, (_, j) => ({
          machine: Steps,
          state: { n: i + j },
        }));
        ids.push(...(await engine.insertMany(batch)).map((r) => r.id));
      }
      for (const [i, id] of ids.entries()) {
        expect((await engine.wait(id, { timeout: 60_000 })).result).toBe(i + 2);
      }
      // Three transitions each: two history rows, and the done kept in the instance row.
      const { rows: history } = await admin.query<{ n: number }>(
        `select count(*)::int as n from gd.transitions group by instance_id having count(*) <> 2
         union all
         select count(*)::int from gd.instances where done_duration_ms is null having count(*) > 0`,
      );
      expect(history).toEqual([]);

      // VACUUM now removes nothing that died since the holder's snapshot.
      await admin.query("vacuum gd.instances");
      const heldDead = await eventually("dead tuples to be counted", async () => {
        const dead = await deadInInstances();
        return dead >= INSTANCES ? dead : 0;
      });

      const warnings: Array<EngineEvents["engine:warning"]> = [];
      const logger = { debug() {}, info() {}, warn() {}, error() {} };
      const watch = new VacuumWatch({
        pool: admin,
        schema,
        events: { emit: (_: string, w: EngineEvents["engine:warning"]) => void warnings.push(w) } as never,
        logger: logger as never,
        horizonMs: 100,
      });
      const warning = await eventually("a warning naming the holder", async () =>
        (await watch.check()).find((w) => w.kind === "horizon_held" && w.pid === pid),
      );
      expect(warning.message).toContain(`pid ${pid}`);
      expect(warning.message).toContain(`"report-left-open"`);
      expect(warning.message).toMatch(/instances \d+/);

      // The holder ends: the next VACUUM removes them, and the warning goes.
      await holder.query("commit");
      await admin.query("vacuum gd.instances");
      const afterDead = await eventually("dead tuples removed", async () => {
        const dead = await deadInInstances();
        return dead < heldDead / 10 ? dead + 1 : 0;
      });
      expect((await watch.check()).filter((w) => w.kind === "horizon_held" && w.pid === pid)).toEqual([]);
      console.log(
        `xmin horizon held by a REPEATABLE READ transaction: ${INSTANCES} instances done, 3 transitions each\n` +
          `  dead tuples in instances after VACUUM: ${heldDead} while held, ${afterDead - 1} after it ended\n` +
          `  warning: ${warning.message}`,
      );
    },
    process.env.RELIABILITY_FULL ? 600_000 : 60_000,
  );
});
