/**
 * A poison pill (PR size): a step that kills its own process every
 * time (process.exit(1)), maxAttempts 3, among healthy instances. The crash loop
 * ends: the instance is `failed` after its step ran 3 times charged, the healthy
 * instances all complete, and the dead workers are respawned. A run taken from a
 * node's claim-ahead buffer that dies before its start is marked looks unstarted
 * and goes back uncharged, but at most twice (MAX_UNCHARGED_RETURNS): so 3 to 5 runs.
 */
import { describe, expect, it } from "vitest";
import { MAX_UNCHARGED_RETURNS } from "../../src/sql/claims.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { Fleet, forkChild, useChildren } from "../support/worker-process.js";
import { FiveSteps, ledgerSql, Poison } from "./fixtures/machines.js";

useChildren();
const db = await useTestDatabase(import.meta.url);

const WORKERS = 3;
const HEALTHY = 60;
const STEPS = ["step1", "step2", "step3", "step4", "step5"];

describe("a step that kills its process every time", () => {
  it("fails after 3 charged runs (at most 2 more uncharged) while healthy instances complete and workers are respawned", async () => {
    await db.pool.query(ledgerSql(db.schema));
    const fleet = new Fleet(
      (slot, generation) =>
        forkChild(new URL("./fixtures/worker.ts", import.meta.url), {
          name: `gd-p${slot}-${generation}`,
          env: { DATABASE_URL: db.url, GD_SCHEMA: db.schema, GD_CONCURRENCY: "4", GD_LEASE: "2s", GD_REAPER: "500ms" },
        }),
      { respawn: true },
    );
    try {
      const started = Date.now();
      await fleet.start(WORKERS);
      const client = db.engine({ poolSize: 3 });
      await client.start();
      const healthy = await client.insertMany(
        Array.from({ length: HEALTHY / 2 }, (_, i) => ({ machine: FiveSteps, state: { n: i, trail: [] } })),
      );
      const poison = await client.insert(Poison, { state: {} });
      healthy.push(
        ...(await client.insertMany(
          Array.from({ length: HEALTHY / 2 }, (_, i) => ({ machine: FiveSteps, state: { n: 100 + i, trail: [] } })),
        )),
      );

      const failed = await client.wait(poison.id, { timeout: 40_000 }).catch((error: unknown) => {
        throw new Error(`${String(error)}\n${fleet.outputs()}`);
      });
      await eventually(
        "healthy instances done",
        async () => {
          const { rows } = await db.pool.query<{ n: number }>(
            `select count(*)::int as n from "${db.schema}".instances where machine = $1 and status = 'done'`,
            [FiveSteps.name],
          );
          return rows[0]!.n === HEALTHY;
        },
        30_000,
      );
      // The three crashed workers are back (a respawn is not instant on a loaded machine).
      await eventually("workers respawned", () => fleet.ready().length === WORKERS, 30_000);
      const elapsed = Date.now() - started;

      // The poison pill: failed, with the reason; its step body ran 3 times charged, and at most
      // twice more uncharged (each a run from a buffer whose start mark never landed), each time
      // in a new process.
      expect(failed.status).toBe("failed");
      expect(failed.error?.message).toMatch(/exhausted its 3 attempts/);
      const { rows: runs } = await db.pool.query<{ attempt: number; pid: number }>(
        `select attempt, pid from "${db.schema}".test_external where instance_id = $1 order by at`,
        [poison.id],
      );
      const attempts = runs.map((r) => r.attempt);
      expect(attempts.length).toBeGreaterThanOrEqual(3);
      expect(attempts.length).toBeLessThanOrEqual(3 + MAX_UNCHARGED_RETURNS);
      // In order, each attempt charged once; an uncharged run repeats its attempt's number, and may
      // come before any of the three charged ones (the third too: [1, 2, 3, 3]).
      expect([...new Set(attempts)]).toEqual([1, 2, 3]);
      expect(attempts).toEqual([...attempts].sort((a, b) => a - b));
      expect(new Set(runs.map((r) => r.pid)).size).toBe(runs.length);
      // History: three lost leases (one per crash, attempts 1–3), then the failure; nothing else.
      // (The failure is recorded by a 4th claim that does not run the step.)
      const history = await client.history(poison.id);
      expect(history.map((t) => t.outcome)).toEqual(["lease_expired", "lease_expired", "lease_expired", "failed"]);
      expect(history.slice(0, 3).map((t) => t.attempt)).toEqual([1, 2, 3]);

      // One worker death per run, all exit code 1 and none of them our doing; each was respawned.
      const crashes = fleet.exits.filter((e) => !e.killedByUs);
      expect(crashes.map((e) => e.code)).toEqual(runs.map(() => 1));
      expect(fleet.exits.filter((e) => e.killedByUs)).toEqual([]);
      expect(fleet.spawnCount).toBe(WORKERS + runs.length);
      expect(fleet.fatal).toEqual([]);

      // Healthy instances: done, each transition exactly once, transactional effects exactly once.
      for (const { id } of healthy) {
        const transitions = (await client.history(id)).filter((t) => t.outcome === "next" || t.outcome === "done");
        expect(transitions.map((t) => [t.fromStep, t.outcome])).toEqual(
          STEPS.map((s, i) => [s, i < 4 ? "next" : "done"]),
        );
      }
      const { rows: effects } = await db.pool.query(
        `select instance_id, step, count(*) from "${db.schema}".test_effects group by 1, 2 having count(*) <> 1`,
      );
      expect(effects).toEqual([]);
      const { rows: statuses } = await db.pool.query(
        `select status, count(*)::int as n from "${db.schema}".instances group by 1 order by 1`,
      );
      expect(statuses).toEqual([
        { status: "done", n: HEALTHY },
        { status: "failed", n: 1 },
      ]);
      console.log(
        `poison pill: failed after ${runs.length} crashes (${runs.length - 3} uncharged); settled in ${elapsed} ms`,
      );
    } finally {
      await fleet.stop();
    }
  });
});
