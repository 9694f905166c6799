/**
 * Fan-out under SIGKILL, at PR size (issue 4): a parent spawns 1,000 child
 * jobs on 4 worker processes that are SIGKILLed repeatedly — once inside the
 * spawning step (before its commit), about ten times while the children run,
 * and twice inside the transactional join step. Exactly 1,000 children must
 * exist, all finished; the join's transactional effect must be recorded
 * exactly once (its external effect shows it really ran several times); the
 * parent must finish with a result computed from all 1,000 ctx.children, and
 * its history must hold one "spawn" and one "joined".
 *
 * Then: cancelling a parent in the middle of its fan-out (300 children, some
 * done, some parked on a signal that never comes, some mid-step) cancels every
 * child that is not terminal, at once; steps still running finish into a fence
 * and change nothing; the join never runs.
 */
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { InstanceTerminatedError } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { Fleet, forkChild, seededRandom, useChildren, type Child } from "../support/worker-process.js";
import { awaitFanoutLedgerSql, FanParent, GatedParent } from "./fixtures/await-fanout-machines.js";

useChildren();
const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

const WORKERS = 4;
const CHILDREN = 1000;
/** Kills while the children run (besides one in the spawning step and two in the join). */
const FANOUT_KILLS = 10;
const TERMINAL = ["done", "failed", "cancelled"];

const seed = Number(process.env.CHAOS_SEED ?? Date.now() % 1_000_000);
const random = seededRandom(seed);
let fleet: Fleet;
let started = 0;
const client = db.engine({ poolSize: 3 });

beforeAll(async () => {
  console.log(`fanout-kill chaos seed ${seed} (replay with CHAOS_SEED=${seed})`);
  await db.pool.query(awaitFanoutLedgerSql(db.schema));
  started = Date.now();
  fleet = new Fleet((slot, generation) =>
    forkChild(new URL("./fixtures/await-fanout-worker.ts", import.meta.url), {
      name: `gd-f${slot}-${generation}`,
      env: {
        DATABASE_URL: db.url,
        GD_SCHEMA: db.schema,
        GD_CONCURRENCY: "5",
        GD_POOL: "5",
        GD_LEASE: "2s",
        GD_REAPER: "500ms",
      },
    }),
  );
  await fleet.start(WORKERS);
  await client.start();
}, 90_000);

afterAll(async () => {
  await fleet?.stop();
});

const debug = (message: string) => {
  if (process.env.CHAOS_DEBUG) console.log(`${Date.now() - started} ms: ${message}`);
};

/**
 * The worker running `step` of `id`, once the step's body has started (it wrote
 * its external row for that attempt): a kill then lands inside the body, before
 * the commit.
 */
async function insideStep(
  id: string,
  step: string,
  minAttempt: number,
  timeoutMs = 30_000,
): Promise<{ child: Child; attempt: number }> {
  return eventually(
    `instance ${id} inside ${step} (attempt >= ${minAttempt})`,
    async () => {
      const { rows } = await db.pool.query<{ leased_by: string; attempt: number; pid: number }>(
        `select i.leased_by, i.attempt, e.pid from ${s}.instances i
         join ${s}.chaos_external e on e.instance_id = i.id and e.step = i.step and e.attempt = i.attempt
         where i.id = $1 and i.status = 'running' and i.step = $2 and i.attempt >= $3`,
        [id, step, minAttempt],
      );
      const row = rows[0];
      const child = row && fleet.slots.find((c) => c?.name === row.leased_by && c.pid === row.pid && c.alive());
      return child ? { child, attempt: row.attempt } : undefined;
    },
    timeoutMs,
  );
}

async function childCounts(parentId: string): Promise<{ total: number; terminal: number; running: number }> {
  const { rows } = await db.pool.query<{ total: number; terminal: number; running: number }>(
    `select count(*)::int as total, count(*) filter (where status in ('done', 'failed', 'cancelled'))::int as terminal,
            count(*) filter (where status = 'running')::int as running
     from ${s}.instances where parent_id = $1`,
    [parentId],
  );
  return rows[0]!;
}

describe("fan-out under SIGKILL", () => {
  it(
    "1,000 children exactly, the join's effect exactly once, the parent done from all of ctx.children",
    { timeout: 120_000 },
    async () => {
      const t0 = Date.now();
      const { id: parent } = await client.insert(FanParent, {
        state: { children: CHILDREN, workMs: 100, spawnDelayMs: 1500, joinDelayMs: 1200 },
      });
      const kills: Array<{ phase: string; worker: string; running: number }> = [];

      // 1. Kill inside the spawning step: nothing of the spawn may survive.
      const spawner = await insideStep(parent, "start", 1);
      await fleet.kill(spawner.child);
      kills.push({ phase: "spawn", worker: spawner.child.name, running: 1 });
      debug(`killed ${spawner.child.name} inside the spawn step (attempt ${spawner.attempt})`);
      // The kill landed before the spawn's commit: no child, no "spawn" in the history.
      expect((await childCounts(parent)).total).toBe(0);
      expect((await client.history(parent)).map((t) => t.outcome)).not.toContain("spawn");

      // 2. Kill busy workers while the children run.
      await eventually("the parent joining", async () => (await client.get(parent))?.status === "joining", 30_000);
      const spawnedAt = Date.now();
      while (kills.length < 1 + FANOUT_KILLS) {
        await eventually("two live workers", () => fleet.ready().length >= 2, 60_000);
        await new Promise((resolve) => setTimeout(resolve, 150 + random() * 350));
        const counts = await childCounts(parent);
        if (counts.terminal >= CHILDREN * 0.97) break;
        const { rows } = await db.pool.query<{ leased_by: string; n: number }>(
          `select leased_by, count(*)::int as n from ${s}.instances where parent_id = $1 and status = 'running' group by 1`,
          [parent],
        );
        const ready = fleet.ready();
        const busy = ready.filter((c) => rows.some((r) => r.leased_by === c.name));
        const victim = (busy.length > 0 ? busy : ready)[
          Math.floor(random() * (busy.length > 0 ? busy.length : ready.length))
        ]!;
        const running = rows.find((r) => r.leased_by === victim.name)?.n ?? 0;
        await fleet.kill(victim);
        kills.push({ phase: "fan-out", worker: victim.name, running });
        debug(`killed ${victim.name} during fan-out (${running} children claimed by it; ${counts.terminal} finished)`);
      }
      const fanoutKills = kills.filter((k) => k.phase === "fan-out").length;

      // 3. Kill inside the join (a transactional step: its write is rolled back), twice.
      let joinAttempt = 1;
      for (let i = 0; i < 2; i++) {
        const joiner = await insideStep(parent, "join", joinAttempt, 45_000);
        await fleet.kill(joiner.child);
        kills.push({ phase: "join", worker: joiner.child.name, running: 1 });
        debug(`killed ${joiner.child.name} inside the join (attempt ${joiner.attempt})`);
        joinAttempt = joiner.attempt + 1;
      }
      const done = await client.wait(parent, { timeout: 45_000 }).catch((error: unknown) => {
        throw new Error(`${String(error)}\nseed ${seed}\n${fleet.outputs()}`);
      });
      const finished = Date.now();

      // The parent: done, from all 1,000 children in spawn order.
      expect(done.status).toBe("done");
      expect(done.result).toEqual({
        count: CHILDREN,
        done: CHILDREN,
        distinctIds: CHILDREN,
        inSpawnOrder: true,
        sum: (CHILDREN * (CHILDREN - 1)) / 2,
        sumOfSquares: ((CHILDREN - 1) * CHILDREN * (2 * CHILDREN - 1)) / 6,
        machines: ["ChaosFanChild"],
      });
      const history = await client.history(parent);
      const outcomes = history.map((t) => t.outcome);
      expect(
        outcomes.filter((o) => o === "spawn"),
        `parent history ${outcomes.join(",")}`,
      ).toHaveLength(1);
      expect(outcomes.filter((o) => o === "joined")).toHaveLength(1);
      expect(outcomes.filter((o) => o === "done")).toHaveLength(1);
      expect(outcomes.filter((o) => !["spawn", "joined", "done", "lease_expired", "error"].includes(o))).toEqual([]);
      // spawn → joined → done, in that order.
      expect(outcomes.filter((o) => o === "spawn" || o === "joined" || o === "done")).toEqual([
        "spawn",
        "joined",
        "done",
      ]);
      // Each killed attempt of the parent's steps was reaped: at least the spawn kill and the two join kills.
      expect(outcomes.filter((o) => o === "lease_expired").length).toBeGreaterThanOrEqual(3);

      // Exactly 1,000 children, one per index, all done, each with exactly one "done" transition.
      const { rows: children } = await db.pool.query<{
        total: number;
        indexes: number;
        lo: number;
        hi: number;
        done: number;
      }>(
        `select count(*)::int as total, count(distinct (state->>'index')::int)::int as indexes, min((state->>'index')::int) as lo,
              max((state->>'index')::int) as hi, count(*) filter (where status = 'done')::int as done
       from ${s}.instances where parent_id = $1`,
        [parent],
      );
      expect(children[0]).toEqual({ total: CHILDREN, indexes: CHILDREN, lo: 0, hi: CHILDREN - 1, done: CHILDREN });
      const { rows: childHistory } = await db.pool.query<{ bad: number; reaped: number }>(
        `select count(*) filter (where dones <> 1)::int as bad, coalesce(sum(reaped), 0)::int as reaped from (
         select c.id, count(*) filter (where t.outcome = 'done') + max((c.done_duration_ms is not null)::int) as dones,
                count(*) filter (where t.outcome = 'lease_expired') as reaped
         from ${s}.instances c left join ${s}.transitions t on t.instance_id = c.id where c.parent_id = $1 group by c.id) x`,
        [parent],
      );
      expect(childHistory[0]!.bad).toBe(0);

      // The join's transactional effect: exactly once, having seen all 1,000 children; it ran (externally) once per attempt.
      const { rows: joinEffects } = await db.pool.query<{ children_seen: number; attempt: number }>(
        `select children_seen, attempt from ${s}.fan_join_effects where parent_id = $1`,
        [parent],
      );
      expect(joinEffects).toHaveLength(1);
      expect(joinEffects[0]!.children_seen).toBe(CHILDREN);
      const { rows: joinRuns } = await db.pool.query<{ attempt: number }>(
        `select attempt from ${s}.chaos_external where instance_id = $1 and step = 'join' order by at`,
        [parent],
      );
      expect(joinRuns.length).toBeGreaterThanOrEqual(3);
      expect(joinEffects[0]!.attempt).toBe(joinRuns.at(-1)!.attempt);

      // Every child's external effect happened at least once (re-executions after kills allowed).
      const { rows: external } = await db.pool.query<{ children: number; runs: number }>(
        `select count(distinct e.instance_id)::int as children, count(*)::int as runs
       from ${s}.chaos_external e join ${s}.instances c on c.id = e.instance_id where c.parent_id = $1 and e.step = 'perform'`,
        [parent],
      );
      expect(external[0]!.children).toBe(CHILDREN);

      console.log(
        `fanout-kill: seed ${seed}; ${CHILDREN} children; spawn→joining ${spawnedAt - t0} ms, total ${finished - t0} ms; ` +
          `${kills.length} kills (${kills.map((k) => `${k.phase}:${k.running}`).join(" ")}); ` +
          `${childHistory[0]!.reaped} child leases reaped, ${external[0]!.runs - CHILDREN} child re-executions; join ran ${joinRuns.length} times (attempts ${joinRuns.map((r) => r.attempt).join(",")}); ` +
          `leases lost ${fleet.received.filter((m) => m.type === "lease-lost").length}; engine errors ${fleet.received.filter((m) => m.type === "engine-error").length}`,
      );
      expect(fanoutKills).toBeGreaterThanOrEqual(5);
      expect(kills.filter((k) => k.phase === "fan-out" && k.running > 0).length).toBeGreaterThanOrEqual(3);
      expect(childHistory[0]!.reaped).toBeGreaterThan(0);
      expect(fleet.exits.filter((e) => !e.killedByUs)).toEqual([]);
      expect(fleet.exits.filter((e) => e.killedByUs)).toHaveLength(kills.length);
      expect(fleet.fatal).toEqual([]);
    },
  );

  it(
    "cancelling a parent mid-fan-out cancels every non-terminal child at once; running steps are fenced; no join",
    { timeout: 90_000 },
    async () => {
      // 300 children, interleaved: 100 quick (done at once), 150 parked on a "gate" signal that never comes, 50 slow (1.5 s steps).
      const flavors = Array.from(
        { length: 300 },
        (_, i) => (i % 6 === 0 || i % 6 === 3 ? "quick" : i % 6 === 5 ? "slow" : "gate") as "quick" | "gate" | "slow",
      );
      await eventually("all workers up", () => fleet.ready().length === WORKERS, 60_000);
      const { id: parent } = await client.insert(GatedParent, { state: { flavors } });
      const flavorOf = async () => {
        const { rows } = await db.pool.query<{ id: string; flavor: string; status: string }>(
          `select id::text, state->>'flavor' as flavor, status from ${s}.instances where parent_id = $1 order by id`,
          [parent],
        );
        return rows;
      };
      await eventually(
        "some quick children done, some gates parked, some slow children running",
        async () => {
          const rows = await flavorOf();
          const n = (flavor: string, status: string) =>
            rows.filter((r) => r.flavor === flavor && r.status === status).length;
          return n("quick", "done") >= 30 && n("gate", "awaiting") >= 30 && n("slow", "running") >= 5;
        },
        30_000,
      );
      expect((await client.get(parent))?.status).toBe("joining");

      await client.cancel(parent, "mid-fan-out");
      // One statement: when cancel resolves no child is live any more.
      const right = await flavorOf();
      expect(right.filter((r) => !TERMINAL.includes(r.status))).toEqual([]);
      expect(right).toHaveLength(300);
      const cancelledAtOnce = new Set(right.filter((r) => r.status === "cancelled").map((r) => r.id));
      // A worker dies right after the cancel, with slow steps of cancelled children in flight.
      const { rows: slowHolders } = await db.pool.query<{ pid: number }>(
        `select distinct e.pid from ${s}.chaos_external e join ${s}.instances c on c.id = e.instance_id
       where c.parent_id = $1 and e.step = 'slow' and e.tag = 'started'
         and not exists (select 1 from ${s}.chaos_external f where f.instance_id = e.instance_id and f.attempt = e.attempt and f.tag = 'finished')`,
        [parent],
      );
      const victim = fleet.ready().find((c) => slowHolders.some((h) => h.pid === c.pid));
      if (victim) await fleet.kill(victim);

      // Slow steps that were running finish their body (elsewhere than on the killed worker) and try to commit: fenced.
      await eventually(
        "every started slow step finished its body",
        async () => {
          const { rows } = await db.pool.query<{ n: number }>(
            `select count(*)::int as n from ${s}.chaos_external e join ${s}.instances c on c.id = e.instance_id
           where c.parent_id = $1 and e.step = 'slow' and e.tag = 'started' and e.pid <> $2
             and not exists (select 1 from ${s}.chaos_external f where f.instance_id = e.instance_id and f.attempt = e.attempt and f.tag = 'finished')`,
            [parent, victim?.pid ?? -1],
          );
          return rows[0]!.n === 0;
        },
        20_000,
      );
      // And the join sweep has counted every child (it must not wake a cancelled parent).
      await eventually(
        "the join sweep counted every child",
        async () => {
          const { rows } = await db.pool.query<{ n: number }>(
            `select count(*)::int as n from ${s}.instances where parent_id = $1 and not join_counted`,
            [parent],
          );
          return rows[0]!.n === 0;
        },
        20_000,
      );
      // Nothing changed since the cancel: fenced commits wrote nothing, and the sweep woke no one.
      const after = await flavorOf();
      expect(after.map((r) => r.status)).toEqual(right.map((r) => r.status));
      expect(after.filter((r) => r.flavor === "gate").every((r) => r.status === "cancelled")).toBe(true);
      expect(after.filter((r) => r.flavor === "slow" && r.status === "cancelled").length).toBeGreaterThanOrEqual(5);
      expect(after.filter((r) => r.flavor === "quick" && r.status === "done").length).toBeGreaterThanOrEqual(30);
      expect(after.filter((r) => r.status === "failed")).toEqual([]);

      // Each child's history ends exactly once: a cancelled child has no "done", a done child no "cancelled".
      const { rows: ends } = await db.pool.query<{ id: string; status: string; dones: number; cancels: number }>(
        // A done is kept in the instance row (done_duration_ms), every other outcome in transitions.
        `select c.id::text, c.status,
                (count(*) filter (where t.outcome = 'done') + max((c.done_duration_ms is not null)::int))::int as dones,
                count(*) filter (where t.outcome = 'cancelled')::int as cancels
       from ${s}.instances c left join ${s}.transitions t on t.instance_id = c.id where c.parent_id = $1 group by c.id, c.status`,
        [parent],
      );
      expect(
        ends.filter((e) => (e.status === "done" ? e.dones !== 1 || e.cancels !== 0 : e.cancels !== 1 || e.dones !== 0)),
      ).toEqual([]);
      expect(ends.filter((e) => e.status === "cancelled").length).toBe(cancelledAtOnce.size);

      // The parent: cancelled, spawned once, never joined, its join never ran.
      const p = await client.get(parent);
      expect(p?.status).toBe("cancelled");
      const outcomes = (await client.history(parent)).map((t) => t.outcome);
      expect(outcomes.filter((o) => o === "spawn")).toHaveLength(1);
      expect(outcomes).not.toContain("joined");
      expect(outcomes.at(-1)).toBe("cancelled");
      const { rows: joins } = await db.pool.query(`select 1 from ${s}.fan_join_effects where parent_id = $1`, [parent]);
      expect(joins).toEqual([]);

      // The gate opening now is too late: the child is terminal.
      const gated = after.find((r) => r.flavor === "gate")!;
      await expect(client.signal({ id: gated.id }, "gate")).rejects.toBeInstanceOf(InstanceTerminatedError);

      console.log(
        `fanout-kill cancel: 300 children; at cancel ${after.filter((r) => r.status === "done").length} done, ${cancelledAtOnce.size} cancelled ` +
          `(${after.filter((r) => r.flavor === "slow" && r.status === "cancelled").length} slow, ${slowHolders.length} workers with slow steps in flight); ` +
          `killed after cancel: ${victim?.name ?? "none"}`,
      );
      expect(fleet.exits.filter((e) => !e.killedByUs)).toEqual([]);
      expect(fleet.fatal).toEqual([]);
    },
  );

  // Found by the cancel case above (which fails now and then with "deadlock detected" from
  // engine.cancel): the cancel locks the parent, then its children; the join sweep locks
  // finished children, then their parents. Here the interleaving is forced step by step with
  // real engine operations; the only help is a transaction holding one child's row lock.
  it(
    "cancelling a parent while the join sweep counts a child that just finished does not deadlock",
    { timeout: 60_000 },
    async () => {
      await eventually("all workers up", () => fleet.ready().length === WORKERS, 60_000);
      const errorsBefore = fleet.received.filter((m) => m.type === "engine-error").length;
      const waiting = async (needle: string) => {
        const { rows } = await db.pool.query<{ n: number }>(
          `select count(*)::int as n from pg_stat_activity
         where datname = current_database() and wait_event_type = 'Lock' and query like '%' || $1 || '%' and query like '%' || $2 || '%'`,
          [db.schema, needle],
        );
        return rows[0]!.n > 0;
      };
      const holder = new pg.Client({ connectionString: db.url });
      await holder.connect();
      /** One try, holding child `held` (0 or 1); "wrong order" when the cancel had already passed the other child. */
      const race = async (held: 0 | 1) => {
        const { id: parent } = await client.insert(GatedParent, { state: { flavors: ["gate", "gate"] } });
        const kids = await eventually(
          "two children parked",
          async () => {
            const { rows } = await db.pool.query<{ id: string }>(
              `select id::text from ${s}.instances where parent_id = $1 and status = 'awaiting' order by id`,
              [parent],
            );
            return rows.length === 2 ? rows.map((r) => r.id) : undefined;
          },
          30_000,
        ).catch(async (error: unknown) => {
          const { rows } = await db.pool.query(
            `select id, parent_id, status, step, attempt, leased_by from ${s}.instances where id = $1 or parent_id = $1`,
            [parent],
          );
          throw new Error(`${String(error)}: ${JSON.stringify(rows)}\n${fleet.outputs()}`);
        });
        const [heldChild, other] = [kids[held]!, kids[1 - held]!];
        expect((await client.get(parent))?.status).toBe("joining");
        // 1. Someone holds one child's row (as a completion or a signal does for a moment).
        await holder.query("begin");
        await holder.query(`select id from ${s}.instances where id = $1 for update`, [heldChild]);
        let released = false;
        const release = async () => {
          if (!released) await holder.query("rollback");
          released = true;
        };
        try {
          // 2. The cancel locks the parent, cancels children in its plan's order, and waits at the held one.
          const cancelled = client.cancel(parent, "race").then(
            () => "ok",
            (error: unknown) => String(error),
          );
          await eventually("the cancel waiting for the held child", () => waiting("-- cancel:"), 10_000);
          const otherFree = await db.pool
            .query(`select id from ${s}.instances where id = $1 for update nowait`, [other])
            .then(
              () => true,
              (error: { code?: string }) => {
                if (error.code === "55P03") return false;
                throw error;
              },
            );
          if (!otherFree) {
            await release();
            await cancelled;
            return "wrong order" as const;
          }
          // 3. The other child finishes for real (its gate opens, a worker runs its last step) after the cancel's snapshot...
          await client.signal({ id: other }, "gate");
          await eventually("the other child done", async () => (await client.get(other))?.status === "done", 15_000);
          // ...and a worker's join sweep locks it to count it, then waits for the parent, which the cancel holds.
          // (A sweep that does not wait for the parent is what a fix looks like: then give the sweeps a few rounds.)
          const doneAt = Date.now();
          await eventually(
            "a join sweep waiting for the parent (or 3 s of sweeps)",
            async () => (await waiting("join_counted")) || Date.now() - doneAt > 3000,
            15_000,
          );
          const sweepBlocked = await waiting("join_counted");
          // 4. The held child is released: the cancel goes on to the other child — which the sweep holds.
          await release();
          const outcome = await cancelled;
          // The sweep gets its count of the other child in eventually (retrying after an error, if it had one);
          // an error it hit is reported over IPC before its next tick, so it has arrived by then.
          await eventually(
            "the other child counted by a join sweep",
            async () =>
              (await db.pool.query(`select 1 from ${s}.instances where id = $1 and join_counted`, [other])).rowCount ===
              1,
            15_000,
          );
          await new Promise((resolve) => setImmediate(resolve));
          return { parent, heldChild, other, outcome, sweepBlocked };
        } finally {
          await release().catch(() => {});
        }
      };
      try {
        // The cancel's plan decides in which order it takes the children (physical order, with a
        // hash join): try holding the first one, then the other, and so on, until the race is set up.
        let result: Awaited<ReturnType<typeof race>> = "wrong order";
        for (let attempt = 0; attempt < 8 && result === "wrong order"; attempt++)
          result = await race((attempt % 2) as 0 | 1);
        expect(result).not.toBe("wrong order");
        if (result === "wrong order") return;
        const deadlocks = fleet.received
          .slice(errorsBefore)
          .filter((m) => m.type === "engine-error" && /deadlock/i.test(String(m.error)));
        console.log(
          `cancel/join-sweep race: sweep blocked on the parent: ${result.sweepBlocked}; cancel: ${result.outcome}; sweep deadlocks: ${deadlocks.length}`,
        );
        // Whichever of the two Postgres picks as the deadlock victim, that is the bug.
        expect({ cancel: result.outcome, sweepDeadlocks: deadlocks.length }).toEqual({
          cancel: "ok",
          sweepDeadlocks: 0,
        });
        expect((await client.get(result.parent))?.status).toBe("cancelled");
        expect((await client.get(result.heldChild))?.status).toBe("cancelled");
        expect((await client.get(result.other))?.status).toBe("done");
      } finally {
        await holder.end();
      }
    },
  );
});
