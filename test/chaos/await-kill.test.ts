/**
 * Issue 3, "sets and packs surviving a SIGKILL between partial arrivals"
 * (SIGKILLs, the signal/await race and duplicate signals combined, at PR size): 60 instances
 * await the set { all: [a, b, c] } and 60 the pack { event: "item", count: 10 }
 * on 3 worker processes. The test delivers their signals in rounds, each
 * instance's share spread at random over the rounds (so most instances sit on
 * a partial set or pack for a while), SIGKILLs a worker between rounds and in
 * the middle of some rounds, and resends some signals with the same dedupKey
 * (right away, and once more after everything finished). Instances start at
 * staggered times, so some signals reach the mailbox before their await.
 *
 * Every instance must finish having consumed exactly its signals — for a set
 * the first a, b and c in arrival order, for a pack its 10 distinct items in
 * arrival order — no signal may be consumed twice or stored twice, and the
 * transactional step that records ctx.awaited must commit exactly once per
 * instance however often it was killed.
 */
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { Fleet, forkChild, seededRandom, useChildren, type Child } from "../support/worker-process.js";
import { awaitFanoutLedgerSql, PackWaiter, SetWaiter } from "./fixtures/await-fanout-machines.js";

useChildren();
const db = await useTestDatabase(import.meta.url);

const WORKERS = 3;
const SETS = 60;
const PACKS = 60;
const PACK_SIZE = 10;
const ROUNDS = 4;
const LANES = 8;

/** One signal the test will send, and what became of it. */
interface Planned {
  instance: number;
  event: string;
  payload: { instance: number; event: string; k: number };
  dedupKey: string;
  round: number;
  /** Resend right after, with the same dedupKey. */
  resend: boolean;
  /** Not part of what the await consumes (a second "a" for a set): must stay in the mailbox. */
  extra: boolean;
  signalId?: string | null;
}

interface Plan {
  kind: "set" | "pack";
  index: number;
  id: string;
  target: string | { id: string };
  signals: Planned[];
}

// ------------------------------------------------------------------------
// Found while writing the chaos test below: the mailbox is read "order by id"
// where id is selected as `id::text as id`, so Postgres sorts by the text alias
// ("10" < "9"). Signals are then consumed, and listed in ctx.awaited, out of
// arrival order as soon as one mailbox straddles a power of ten; and
// `lastByKey` (same pattern) picks the wrong "latest" instance of a key.
// Deterministic, no processes: these run first, on an in-process engine.

const Probe = defineMachine({
  name: "ChaosOrderProbe",
  queue: "probe",
  state: z.object({ pack: z.number() }),
  steps: {
    // Parked on "go" the items pile up in the mailbox; then the pack takes the first `pack` of them at once.
    start: (ctx) => ctx.await("go", "collect"),
    collect: (ctx) =>
      ctx.state.pack === 0 ? ctx.done([]) : ctx.await({ event: "item", count: ctx.state.pack }, "got"),
    got: (ctx) => ctx.done(ctx.awaited.map((s) => s.payload)),
  },
});

describe("arrival order of the mailbox across id digit boundaries (no kills)", () => {
  it("a pack consumes the first signals that arrived, listed oldest first, when their ids go from 9… to 10…", async () => {
    const engine = db.engine({ queues: { probe: 2 }, machines: [Probe] });
    await engine.start();
    try {
      const { id } = await engine.insert(Probe, { state: { pack: 2 } });
      // Unrelated signals until the next three signal ids straddle a power of ten (…8, …9, …10 style).
      for (;;) {
        const { signalId } = await engine.signal({ id }, "noise");
        const next = BigInt(signalId!) + 1n;
        if (String(next).length !== String(next + 2n).length) break;
      }
      const items = [];
      for (const n of [1, 2, 3]) items.push((await engine.signal({ id }, "item", n)).signalId);
      await engine.signal({ id }, "go");
      const done = await engine.wait(id, { timeout: 10_000 });
      expect(done.status).toBe("done");
      // Items 1 and 2 arrived first (ids ${items[0]}, ${items[1]}); item 3 must stay in the mailbox.
      expect(done.result, `pack over signal ids ${items.join(", ")}`).toEqual([1, 2]);
    } finally {
      await engine.stop();
    }
  });

  it("a retried webhook (same dedupKey) to a key whose newest instance finished is a duplicate, when instance ids go from 9… to 10…", async () => {
    const engine = db.engine({ queues: { probe: 2 }, machines: [Probe] });
    await engine.start();
    try {
      // Parked instances (a queue nobody runs) until the next two instance ids straddle a power of ten.
      const { id: last } = await engine.insert(Probe, { state: { pack: 0 }, queue: "parked" });
      const next = BigInt(last) + 1n;
      let gap = 0;
      while (String(next + BigInt(gap)).length === String(next + BigInt(gap) + 1n).length) gap++;
      if (gap > 0)
        await engine.insertMany(
          Array.from({ length: gap }, () => ({ machine: Probe, state: { pack: 0 }, queue: "parked" })),
        );
      const key = "order-probe-key";
      const older = await engine.insert(Probe, { state: { pack: 0 }, correlationKey: key });
      await engine.signal(key, "go");
      expect((await engine.wait(older.id, { timeout: 10_000 })).status).toBe("done");
      const newer = await engine.insert(Probe, { state: { pack: 0 }, correlationKey: key });
      expect(String(newer.id).length).toBe(String(older.id).length + 1);
      const first = await engine.signal(key, "go", null, { dedupKey: "hook-1" });
      expect(first).toMatchObject({ instanceId: newer.id, duplicate: false });
      expect((await engine.wait(newer.id, { timeout: 10_000 })).status).toBe("done");
      // The contract: a second signal with the same dedupKey to the same instance is accepted and stored once — also after it finished.
      const again = await engine.signal(key, "go", null, { dedupKey: "hook-1" });
      expect(again).toEqual({ signalId: null, instanceId: newer.id, duplicate: true });
    } finally {
      await engine.stop();
    }
  });
});

describe("sets and packs under SIGKILL between partial arrivals", () => {
  it(
    "each instance consumes exactly its signals, once; the recording step commits once",
    { timeout: 150_000 },
    async () => {
      const seed = Number(process.env.CHAOS_SEED ?? Date.now() % 1_000_000);
      const random = seededRandom(seed);
      console.log(`await-kill chaos seed ${seed} (replay with CHAOS_SEED=${seed})`);
      await db.pool.query(awaitFanoutLedgerSql(db.schema));
      const started = Date.now();
      const s = `"${db.schema}"`;

      const fleet = new Fleet((slot, generation) =>
        forkChild(new URL("./fixtures/await-fanout-worker.ts", import.meta.url), {
          name: `gd-a${slot}-${generation}`,
          env: {
            DATABASE_URL: db.url,
            GD_SCHEMA: db.schema,
            GD_CONCURRENCY: "4",
            GD_POOL: "4",
            GD_LEASE: "2s",
            GD_REAPER: "500ms",
          },
        }),
      );
      try {
        await fleet.start(WORKERS);
        const booted = Date.now();
        const client = db.engine({ poolSize: LANES + 1 });
        await client.start();

        // ---- the plan: who gets which signal in which round
        const pick = <T>(list: readonly T[]) => list[Math.floor(random() * list.length)]!;
        const round = () => 1 + Math.floor(random() * ROUNDS);
        const sets = await client.insertMany(
          Array.from({ length: SETS }, (_, i) => ({
            machine: SetWaiter,
            state: { n: i },
            correlationKey: `set:${seed}:${i}`,
            delay: Math.floor(random() * 5000),
          })),
        );
        const packs = await client.insertMany(
          Array.from({ length: PACKS }, (_, i) => ({
            machine: PackWaiter,
            state: { n: i },
            delay: Math.floor(random() * 5000),
          })),
        );
        const plans: Plan[] = [];
        sets.forEach(({ id }, i) => {
          const order = shuffle(["a", "b", "c"], random);
          const rounds = [round(), round(), round()].sort((x, y) => x - y);
          const signals: Planned[] = [];
          order.forEach((event, k) => {
            const planned = (dedupKey: string, extra: boolean): Planned => ({
              instance: i,
              event,
              payload: { instance: i, event, k: extra ? 99 : k },
              dedupKey,
              round: rounds[k]!,
              resend: random() < 0.1,
              extra,
            });
            signals.push(planned(`set:${i}:${event}`, false));
            // A second "a" (its own dedupKey) while the set is still incomplete: the set takes the first, this one stays.
            if (event === "a" && k < 2 && random() < 0.4) signals.push(planned(`set:${i}:a-extra`, true));
          });
          plans.push({ kind: "set", index: i, id, target: `set:${seed}:${i}`, signals });
        });
        packs.forEach(({ id }, i) => {
          const signals = Array.from({ length: PACK_SIZE }, (_, k) => ({
            instance: i,
            event: "item",
            payload: { instance: i, event: "item", k },
            dedupKey: `pack:${i}:${k}`,
            round: round(),
            resend: random() < 0.1,
            extra: false,
          }));
          signals.sort((x, y) => x.round - y.round || x.payload.k - y.payload.k);
          plans.push({ kind: "pack", index: i, id, target: { id }, signals });
        });
        const lanes = Array.from({ length: LANES }, (_, lane) => plans.filter((_, i) => i % LANES === lane));

        // ---- kills: a worker with steps in flight if there is one soon, else any
        const killedWhileBusy: number[] = [];
        const kill = async (why: string) => {
          await eventually("two live workers", () => fleet.ready().length >= 2, 60_000);
          const deadline = Date.now() + 1500;
          let victim: { child: Child; running: number } | undefined;
          for (let pause = 10; ; pause = Math.min(pause * 2, 100)) {
            const { rows } = await db.pool.query<{ leased_by: string; n: number }>(
              `select leased_by, count(*)::int as n from ${s}.instances where status = 'running' group by 1`,
            );
            const ready = fleet.ready();
            const busy = ready.filter((c) => rows.some((r) => r.leased_by === c.name));
            if (busy.length > 0 || Date.now() > deadline) {
              const chosen = pick(busy.length > 0 ? busy : ready);
              victim = { child: chosen, running: rows.find((r) => r.leased_by === chosen.name)?.n ?? 0 };
              break;
            }
            await new Promise((resolve) => setTimeout(resolve, pause));
          }
          killedWhileBusy.push(victim.running);
          if (process.env.CHAOS_DEBUG)
            console.log(`${Date.now() - started} ms: kill ${victim.child.name} (${why}, ${victim.running} running)`);
          await fleet.kill(victim.child);
        };

        // ---- the rounds
        const resends: Array<{ planned: Planned; result: { signalId: string | null; duplicate: boolean } }> = [];
        const send = async (plan: Plan, planned: Planned) => {
          const result = await client.signal(plan.target, planned.event, planned.payload, {
            dedupKey: planned.dedupKey,
          });
          return result;
        };
        for (let r = 1; r <= ROUNDS; r++) {
          const total = plans.reduce((n, p) => n + p.signals.filter((x) => x.round === r).length, 0);
          let sent = 0;
          let midKill: Promise<void> | undefined;
          const killMidRound = random() < 0.6;
          await Promise.all(
            lanes.map(async (lane) => {
              for (const plan of lane) {
                for (const planned of plan.signals.filter((x) => x.round === r)) {
                  const result = await send(plan, planned);
                  expect(result.duplicate, `first send of ${planned.dedupKey} (instance ${plan.id})`).toBe(false);
                  expect(result.instanceId).toBe(plan.id);
                  planned.signalId = result.signalId;
                  if (planned.resend) resends.push({ planned, result: await send(plan, planned) });
                  if (killMidRound && ++sent >= total / 2 && !midKill) midKill = kill(`mid-round ${r}`);
                }
              }
            }),
          );
          await midKill;
          await new Promise((resolve) => setTimeout(resolve, 50 + random() * 200));
          await kill(`after round ${r}`);
        }
        const chaosEnded = Date.now();

        await eventually(
          "all instances done",
          async () => {
            const { rows } = await db.pool.query<{ n: number }>(
              `select count(*)::int as n from ${s}.instances where status = 'done' and machine in ('ChaosSetWaiter', 'ChaosPackWaiter')`,
            );
            return rows[0]!.n === SETS + PACKS;
          },
          45_000,
        ).catch(async (error: unknown) => {
          const { rows } = await db.pool.query(
            `select status, step, count(*)::int as n from ${s}.instances where machine in ('ChaosSetWaiter', 'ChaosPackWaiter') group by 1, 2`,
          );
          throw new Error(`${String(error)}\nseed ${seed}; ${JSON.stringify(rows)}\n${fleet.outputs()}`);
        });
        const finished = Date.now();

        // A webhook retried after its instance finished: accepted, stored nothing (by key and by id).
        for (const plan of plans) {
          for (const planned of plan.signals)
            if (random() < 0.05) resends.push({ planned, result: await send(plan, planned) });
        }

        // ---- every instance done, each step's commit once
        const { rows: statuses } = await db.pool.query(
          `select status, count(*)::int as n from ${s}.instances where machine in ('ChaosSetWaiter', 'ChaosPackWaiter') group by 1`,
        );
        expect(statuses).toEqual([{ status: "done", n: SETS + PACKS }]);
        let reaped = 0;
        const otherOutcomes: Record<string, number> = {};
        for (const plan of plans) {
          const history = await client.history(plan.id);
          reaped += history.filter((t) => t.outcome === "lease_expired").length;
          for (const t of history)
            if (!["await", "resumed", "done"].includes(t.outcome))
              otherOutcomes[t.outcome] = (otherOutcomes[t.outcome] ?? 0) + 1;
          const main = history
            .filter((t) => ["await", "resumed", "done"].includes(t.outcome))
            .map((t) => [t.outcome, t.fromStep, t.toStep]);
          expect(main, `history of ${plan.kind} ${plan.id} (seed ${seed})`).toEqual([
            ["await", "start", "record"],
            ["resumed", "record", "record"],
            ["done", "record", null],
          ]);
        }
        expect(Object.keys(otherOutcomes).filter((o) => o !== "lease_expired" && o !== "error")).toEqual([]);

        // ---- the ledger: exactly one row per instance, with exactly the expected signals in arrival order
        const { rows: ledgerRows } = await db.pool.query<{
          instance_id: string;
          kind: string;
          signal_ids: string[];
          events: string[];
          payloads: Planned["payload"][];
        }>(`select instance_id::text, kind, signal_ids::text[] as signal_ids, events, payloads from ${s}.await_ledger`);
        const perInstance = new Map<string, number>();
        for (const l of ledgerRows) perInstance.set(l.instance_id, (perInstance.get(l.instance_id) ?? 0) + 1);
        expect(
          [...perInstance].filter(([, n]) => n !== 1),
          `ledger rows per instance (seed ${seed})`,
        ).toEqual([]);
        expect(perInstance.size).toBe(SETS + PACKS);
        const ledger = ledgerRows;
        const byId = new Map(ledger.map((l) => [l.instance_id, l]));
        for (const plan of plans) {
          const entry = byId.get(plan.id);
          const expected = plan.signals.filter((x) => !x.extra);
          expect(entry?.kind, `ledger kind of ${plan.id}`).toBe(plan.kind);
          expect(entry?.signal_ids, `signals consumed by ${plan.kind} ${plan.id} (seed ${seed})`).toEqual(
            expected.map((x) => x.signalId),
          );
          expect(entry?.events).toEqual(expected.map((x) => x.event));
          expect(entry?.payloads).toEqual(expected.map((x) => x.payload));
          if (plan.kind === "set") expect([...entry!.events].sort()).toEqual(["a", "b", "c"]);
          else expect(new Set(entry!.payloads.map((p) => p.k)).size).toBe(PACK_SIZE);
          const instance = await client.get(plan.id);
          expect((instance?.result as { ids: string[] }).ids).toEqual(entry?.signal_ids);
        }

        // ---- no signal consumed twice, nothing consumed that the ledger does not show, nothing stored twice
        const { rows: twice } = await db.pool.query(
          `select id, count(*)::int as n from ${s}.await_ledger, unnest(signal_ids) as id group by id having count(*) > 1`,
        );
        expect(twice).toEqual([]);
        const planned = plans.flatMap((p) => p.signals.map((x) => ({ ...x, instanceId: p.id })));
        const { rows: stored } = await db.pool.query<{
          id: string;
          instance_id: string;
          dedup_key: string;
          consumed: boolean;
        }>(
          `select id::text, instance_id::text, dedup_key, consumed_at is not null as consumed from ${s}.signals
         where instance_id in (select id from ${s}.instances where machine in ('ChaosSetWaiter', 'ChaosPackWaiter'))`,
        );
        expect(stored).toHaveLength(planned.length);
        const storedByKey = new Map(stored.map((x) => [`${x.instance_id}/${x.dedup_key}`, x]));
        for (const x of planned) {
          const row = storedByKey.get(`${x.instanceId}/${x.dedupKey}`);
          expect(row?.id, `stored signal ${x.dedupKey} of ${x.instanceId}`).toBe(x.signalId);
          // The second "a" stays in the mailbox: the set took the first one.
          expect(row?.consumed).toBe(!x.extra);
        }
        // Every resend (during the rounds and after the end) was a harmless duplicate.
        expect(resends.filter((r) => !(r.result.duplicate && r.result.signalId === null))).toEqual([]);

        // ---- external effects of the recording step: at least once each
        const { rows: missing } = await db.pool.query(
          `select i.id from ${s}.instances i where i.machine in ('ChaosSetWaiter', 'ChaosPackWaiter') and not exists (select 1 from ${s}.chaos_external e where e.instance_id = i.id and e.step = 'record')`,
        );
        expect(missing).toEqual([]);
        const { rows: external } = await db.pool.query<{ n: number; duplicated: number }>(
          `select count(*)::int as n, (count(*) - count(distinct (instance_id, step)))::int as duplicated from ${s}.chaos_external`,
        );

        const killedByUs = fleet.exits.filter((e) => e.killedByUs && e.signal === "SIGKILL").length;
        console.log(
          `await-kill: seed ${seed}; boot ${booted - started} ms, rounds ${chaosEnded - booted} ms, settle ${finished - chaosEnded} ms; ` +
            `${planned.length} signals stored, ${resends.length} resends; ${killedByUs} kills (steps claimed by each victim: ${killedWhileBusy.join(",")}); ` +
            `${reaped} leases reaped; external effects ${external[0]!.n} (${external[0]!.duplicated} re-executions); other history ${JSON.stringify(otherOutcomes)}; ` +
            `leases lost ${fleet.received.filter((m) => m.type === "lease-lost").length}; engine errors ${fleet.received.filter((m) => m.type === "engine-error").length}`,
        );
        expect(killedByUs).toBe(killedWhileBusy.length);
        expect(killedByUs).toBeGreaterThanOrEqual(ROUNDS);
        expect(killedWhileBusy.some((n) => n > 0)).toBe(true);
        expect(reaped).toBeGreaterThan(0);
        expect(fleet.exits.filter((e) => !e.killedByUs)).toEqual([]);
        expect(fleet.fatal).toEqual([]);
      } finally {
        await fleet.stop();
      }
    },
  );
});

function shuffle<T>(list: T[], random: () => number): T[] {
  const out = [...list];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1));
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}
