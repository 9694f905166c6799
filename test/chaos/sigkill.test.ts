/**
 * SIGKILL (PR size): worker processes SIGKILLed at random
 * while 300 five-step instances run. Nothing may be lost, every transition is
 * recorded exactly once, transactional effects happen exactly once and external
 * effects at least once.
 */
import { describe, expect, it } from "vitest";
import { eventually, useTestDatabase } from "../support/db.js";
import { Fleet, forkChild, seededRandom, useChildren } from "../support/worker-process.js";
import { FiveSteps, ledgerSql } from "./fixtures/machines.js";

useChildren();
const db = await useTestDatabase(import.meta.url);

const WORKERS = 4;
const INSTANCES = 300;
const KILLS = 15; // one batch of INSTANCES / KILLS instances per kill
const STEPS = ["step1", "step2", "step3", "step4", "step5"];

describe("SIGKILL of worker processes mid-run", () => {
  it("loses nothing and records every transition exactly once", { timeout: 120_000 }, async () => {
    const seed = Number(process.env.CHAOS_SEED ?? Date.now() % 1_000_000);
    const random = seededRandom(seed);
    console.log(`sigkill chaos seed ${seed} (replay with CHAOS_SEED=${seed})`);
    await db.pool.query(ledgerSql(db.schema));
    const started = Date.now();

    const fleet = new Fleet((slot, generation) =>
      forkChild(new URL("./fixtures/worker.ts", import.meta.url), {
        name: `gd-w${slot}-${generation}`,
        env: { DATABASE_URL: db.url, GD_SCHEMA: db.schema, GD_CONCURRENCY: "6", GD_LEASE: "2s", GD_REAPER: "500ms" },
      }),
    );
    try {
      await fleet.start(WORKERS);
      const booted = Date.now();
      const client = db.engine({ poolSize: 3 });
      await client.start();

      const debug = process.env.CHAOS_DEBUG
        ? setInterval(() => {
            void db.pool
              .query(
                `select status, count(*)::int as n, count(*) filter (where lease_expires_at < now())::int as expired from "${db.schema}".instances group by status order by 1`,
              )
              .then(({ rows }) =>
                console.log(
                  `${Date.now() - started} ms: ready ${fleet
                    .ready()
                    .map((c) => c.name)
                    .join(" ")}; ${JSON.stringify(rows)}`,
                ),
              );
          }, 1000)
        : undefined;

      // Each round: wait until a kill cannot take down the last live worker (a respawn
      // takes 1–5 s on a loaded 2-core box), let a batch of work arrive, then SIGKILL a
      // worker that is running steps right now. So every kill lands mid-step.
      const ids: string[] = [];
      const killedWhileBusy: number[] = [];
      let lastKill = 0;
      for (let round = 0; round < KILLS; round++) {
        await eventually("two live workers", () => fleet.ready().length >= 2, 60_000);
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, lastKill + 300 + random() * 500 - Date.now())));
        const batch = await client.insertMany(
          Array.from({ length: INSTANCES / KILLS }, (_, i) => ({
            machine: FiveSteps,
            state: { n: round * 1000 + i, trail: [] },
          })),
        );
        ids.push(...batch.map((r) => r.id));
        await new Promise((resolve) => setTimeout(resolve, 20 + random() * 180));
        const victim = await eventually("a live worker", async () => {
          const { rows } = await db.pool.query<{ leased_by: string; n: number }>(
            `select leased_by, count(*)::int as n from "${db.schema}".instances where status = 'running' group by 1`,
          );
          const ready = fleet.ready();
          const busy = ready.filter((c) => rows.some((r) => r.leased_by === c.name));
          // Prefer a worker with steps in flight; the batch may (rarely) be finished already.
          const pool = busy.length > 0 ? busy : ready;
          if (pool.length === 0) return undefined;
          const chosen = pool[Math.floor(random() * pool.length)]!;
          return { child: chosen, running: rows.find((r) => r.leased_by === chosen.name)?.n ?? 0 };
        });
        killedWhileBusy.push(victim.running);
        await fleet.kill(victim.child);
        lastKill = Date.now();
      }
      const chaosEnded = Date.now();

      // Deadline: last kill + lease (2 s) + 2 reaper ticks + slack for respawns on 2 cores.
      await eventually(
        "all instances done",
        async () => {
          const { rows } = await db.pool.query<{ n: number }>(
            `select count(*)::int as n from "${db.schema}".instances where status = 'done'`,
          );
          return rows[0]!.n === INSTANCES;
        },
        30_000,
      ).catch((error: unknown) => {
        throw new Error(`${String(error)}\nseed ${seed}\n${fleet.outputs()}`);
      });
      const finished = Date.now();
      clearInterval(debug);

      // No instance lost, none left running, all done.
      expect(ids).toHaveLength(INSTANCES);
      const { rows: statuses } = await db.pool.query<{ status: string; n: number }>(
        `select status, count(*)::int as n from "${db.schema}".instances group by status`,
      );
      expect(statuses).toEqual([{ status: "done", n: INSTANCES }]);

      // Each step transition (next/done) recorded exactly once, in order (the reaper's lease_expired rows aside).
      const expected = STEPS.map((step, i) => ({
        fromStep: step,
        toStep: i < STEPS.length - 1 ? STEPS[i + 1] : null,
        outcome: i < STEPS.length - 1 ? "next" : "done",
      }));
      let reaped = 0;
      const otherOutcomes: Record<string, number> = {};
      for (const id of ids) {
        const history = await client.history(id);
        reaped += history.filter((t) => t.outcome === "lease_expired").length;
        for (const t of history)
          if (t.outcome !== "next" && t.outcome !== "done")
            otherOutcomes[t.outcome] = (otherOutcomes[t.outcome] ?? 0) + 1;
        const transitions = history
          .filter((t) => t.outcome === "next" || t.outcome === "done")
          .map((t) => ({ fromStep: t.fromStep, toStep: t.toStep, outcome: t.outcome }));
        expect(transitions, `history of instance ${id} (seed ${seed})`).toEqual(expected);
        const instance = await client.get(id);
        expect(instance?.status).toBe("done");
        expect((instance?.result as { trail: string[] }).trail).toEqual(STEPS);
      }
      // Besides the reaper's rows, only failed attempts ("error": e.g. the server refused a connection) may appear.
      expect(Object.keys(otherOutcomes).filter((o) => o !== "lease_expired" && o !== "error")).toEqual([]);

      // Transactional effects: exactly once per (instance, step).
      const { rows: effects } = await db.pool.query<{ instance_id: string; step: string; n: number }>(
        `select instance_id::text, step, count(*)::int as n from "${db.schema}".test_effects group by 1, 2 having count(*) <> 1`,
      );
      expect(effects).toEqual([]);
      const { rows: effectTotal } = await db.pool.query<{ n: number }>(
        `select count(*)::int as n from "${db.schema}".test_effects`,
      );
      expect(effectTotal[0]!.n).toBe(INSTANCES * 2);

      // External effects: at least once per (instance, step).
      const { rows: missing } = await db.pool.query(
        `select i.id, s.step from "${db.schema}".instances i cross join unnest($1::text[]) as s(step)
         where not exists (select 1 from "${db.schema}".test_external e where e.instance_id = i.id and e.step = s.step)`,
        [STEPS],
      );
      expect(missing).toEqual([]);
      const { rows: external } = await db.pool.query<{ n: number; duplicated: number }>(
        `select count(*)::int as n, (count(*) - count(distinct (instance_id, step)))::int as duplicated from "${db.schema}".test_external`,
      );

      const killedByUs = fleet.exits.filter((e) => e.killedByUs && e.signal === "SIGKILL").length;
      console.log(
        `sigkill: seed ${seed}; boot ${booted - started} ms, chaos ${chaosEnded - booted} ms, recovery ${finished - chaosEnded} ms; ` +
          `${killedByUs} kills (steps running on each victim: ${killedWhileBusy.join(",")}); ${reaped} leases reaped; ` +
          `external effects ${external[0]!.n} (${external[0]!.duplicated} re-executions, ${(external[0]!.duplicated / KILLS).toFixed(1)} per kill); other history rows ${JSON.stringify(otherOutcomes)}; ` +
          `engine errors reported by workers: ${JSON.stringify(summarize(fleet.received.filter((m) => m.type === "engine-error")))}`,
      );

      // The kills really happened, to busy workers, and the reaper really had work.
      expect(killedByUs).toBe(KILLS);
      expect(fleet.exits.filter((e) => !e.killedByUs)).toEqual([]);
      expect(killedWhileBusy.filter((n) => n > 0).length).toBeGreaterThanOrEqual(KILLS / 2);
      expect(reaped).toBeGreaterThan(0);
      // What a kill repeats is bounded by what the victim had started: its running steps plus the
      // finished ones still in the group commit, at most twice its concurrency (6). Rows it had only
      // claimed ahead never ran, so they repeat nothing.
      expect(external[0]!.duplicated).toBeLessThanOrEqual(KILLS * 2 * 6);
      expect(fleet.fatal).toEqual([]);
    } finally {
      await fleet.stop();
    }
  });
});

/** Engine errors by loop and first line, with counts (for the log line). */
function summarize(messages: Array<{ [key: string]: unknown }>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const m of messages) {
    const key = `${String(m.loop)}: ${String(m.error).split("\n")[0]!.slice(0, 120)}`;
    out[key] = (out[key] ?? 0) + 1;
  }
  return out;
}
