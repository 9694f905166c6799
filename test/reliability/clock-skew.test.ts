/**
 * Clock skew: two worker processes whose clocks are 10 minutes ahead and 10 minutes behind
 * (Date.now and new Date moved in the process, test/reliability/fixtures/skewed-clock.ts) share a
 * queue. Leases, delays, await timeouts, runAt and cron slots must follow the database's clock
 * only: a step three leases long (6 s, lease 2 s) is not reaped, nothing runs before it is due by the database's
 * clock, nothing waits ten minutes, cron slots are fired when the database reaches them. Each
 * worker warns of its skew (engine:warning, kind clock_skew) at start.
 *
 * RELIABILITY_FULL=1: 20 instances of each kind and 10 cron slots (default: 4 and 3).
 */
import { afterAll, describe, expect, it } from "vitest";
import { useTestDatabase } from "../support/db.js";
import { instanceQueries } from "../../src/sql/instances.js";
import { forkChild, useChildren, type Child } from "../support/worker-process.js";
import { LongStep, RunAt, RunAtStep, Timed } from "./fixtures/skew-machines.js";
import { eventually } from "../support/db.js";

const FULL = !!process.env.RELIABILITY_FULL;
const EACH = FULL ? 20 : 4;
const SLOTS = FULL ? 10 : 3;
const SKEW_MS = 10 * 60_000;

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
useChildren();
const client = db.engine();
await client.start();

const workers: Child[] = [];
for (const [name, offset] of [
  ["ahead", SKEW_MS],
  ["behind", -SKEW_MS],
] as const) {
  workers.push(
    forkChild(new URL("./fixtures/skewed-worker.ts", import.meta.url), {
      name: `skew-${name}`,
      env: { DATABASE_URL: db.url, GD_SCHEMA: db.schema, GD_CLOCK_OFFSET_MS: String(offset) },
    }),
  );
}
// Two more, one each way, that run only RunAtStep and never poll.
const runAtWorkers: Child[] = [];
for (const [name, offset] of [
  ["runat-ahead", SKEW_MS],
  ["runat-behind", -SKEW_MS],
] as const) {
  runAtWorkers.push(
    forkChild(new URL("./fixtures/skewed-worker.ts", import.meta.url), {
      name: `skew-${name}`,
      env: { DATABASE_URL: db.url, GD_SCHEMA: db.schema, GD_CLOCK_OFFSET_MS: String(offset), GD_ROLE: "runat" },
    }),
  );
}
await Promise.all([...workers, ...runAtWorkers].map((w) => w.waitFor("ready")));
afterAll(async () => {
  for (const w of [...workers, ...runAtWorkers]) w.process.kill("SIGKILL");
  await Promise.all([...workers, ...runAtWorkers].map((w) => w.exited));
});

const figures: string[] = [];
afterAll(() => console.log(`clock skew ±${SKEW_MS / 60_000} min:\n  ${figures.join("\n  ")}`));

/** The instance's history as engine.history reads it (a done is kept in the instance row), by database time. */
async function transitions(id: string): Promise<Array<{ outcome: string; at: number; to: string | null }>> {
  const { rows } = await instanceQueries(db.schema).history(db.pool, { id });
  return rows.map((r) => ({ outcome: r.outcome, to: r.to_step, at: r.at.getTime() }));
}

describe("workers with clocks ten minutes off", () => {
  it("each warns of its skew at start", () => {
    for (const w of workers) {
      const warning = w.messages.find((m) => m.type === "warning" && m.kind === "clock_skew");
      expect(warning, w.name).toBeDefined();
      const skew = warning!.skewMs as number;
      expect(Math.sign(skew)).toBe(w.name === "skew-ahead" ? 1 : -1);
      expect(Math.abs(Math.abs(skew) - SKEW_MS)).toBeLessThan(5_000);
    }
    figures.push(
      `warnings: ${workers.map((w) => `${w.name} skewMs ${w.messages.find((m) => m.kind === "clock_skew")?.skewMs}`).join(", ")}`,
    );
  });

  it("a step three leases long (6 s, lease 2 s) keeps its lease on either node", async () => {
    const ids = (await client.insertMany(Array.from({ length: EACH }, () => ({ machine: LongStep, state: {} })))).map(
      (r) => r.id,
    );
    for (const id of ids) expect((await client.wait(id, { timeout: 30_000 })).status).toBe("done");
    for (const id of ids) expect((await transitions(id)).map((t) => t.outcome)).toEqual(["done"]);
    const by = await db.pool.query(
      `select result #>> '{}' as node, count(*)::int as n from ${s}.instances where id = any($1::bigint[]) group by 1 order by 1`,
      [ids],
    );
    figures.push(
      `6 s steps, lease 2 s: ${EACH} done, 0 lease_expired (${by.rows.map((r) => `${r.node} ${r.n}`).join(", ")})`,
    );
  });

  it("delays and await timeouts are due by the database's clock, neither early nor ten minutes late", async () => {
    const ids = (await client.insertMany(Array.from({ length: EACH }, () => ({ machine: Timed, state: {} })))).map(
      (r) => r.id,
    );
    const gaps: number[] = [];
    for (const id of ids) {
      expect((await client.wait(id, { timeout: 30_000 })).result).toBe("timed out");
      const [next, park, timeout] = await transitions(id);
      expect([next!.outcome, park!.outcome, timeout!.outcome]).toEqual(["next", "await", "timeout"]);
      // Due no earlier than 1 s after the commit that set it (database time).
      expect(park!.at - next!.at).toBeGreaterThanOrEqual(1000);
      expect(timeout!.at - park!.at).toBeGreaterThanOrEqual(1000);
      gaps.push(park!.at - next!.at, timeout!.at - park!.at);
    }
    figures.push(
      `1 s delay then 1 s await timeout: ${EACH} done; database-time gaps ${Math.round(Math.min(...gaps))}–${Math.round(Math.max(...gaps))} ms`,
    );
  });

  it("runAt is due when the database's clock reaches it", async () => {
    const { rows } = await db.pool.query<{ now: Date }>("select now() + interval '1500 milliseconds' as now");
    const runAt = rows[0]!.now;
    const ids = (
      await client.insertMany(Array.from({ length: EACH }, () => ({ machine: RunAt, state: {}, runAt })))
    ).map((r) => r.id);
    const late: number[] = [];
    for (const id of ids) {
      expect((await client.wait(id, { timeout: 30_000 })).result).toBe("ran");
      const [done] = await transitions(id);
      expect(done!.at).toBeGreaterThanOrEqual(runAt.getTime());
      late.push(done!.at - runAt.getTime());
    }
    figures.push(
      `runAt +1.5 s: ${EACH} ran, ${Math.round(Math.min(...late))}–${Math.round(Math.max(...late))} ms after it`,
    );
  });

  it("a runAt set by a step wakes its node when the database's clock reaches it, without a poll", async () => {
    const ids = (await client.insertMany(Array.from({ length: EACH }, () => ({ machine: RunAtStep, state: {} })))).map(
      (r) => r.id,
    );
    const late: number[] = [];
    for (const id of ids) {
      expect((await client.wait(id, { timeout: 20_000 })).result).toBe("later");
      const [next, done] = await transitions(id);
      const { rows } = await db.pool.query(
        `select extract(epoch from inserted_at) * 1000 as at from ${s}.instances where id = $1`,
        [id],
      );
      const due = Number(rows[0].at) + 1500;
      expect(next!.outcome).toBe("next");
      expect(done!.at).toBeGreaterThanOrEqual(due);
      late.push(done!.at - due);
    }
    const by = runAtWorkers.map((w) => `${w.name} ${w.messages.filter((m) => m.type === "step-start").length}`);
    figures.push(
      `runAt set by a step, no poll: ${EACH} ran ${Math.round(Math.min(...late))}–${Math.round(Math.max(...late))} ms after it (step starts: ${by.join(", ")})`,
    );
  });

  it("cron slots are fired when the database's clock reaches them, once each", async () => {
    const ticks = await eventually(
      `${SLOTS} cron slots`,
      async () => {
        const { rows } = await db.pool.query<{ tick: number; fired: number }>(
          `select extract(epoch from tick_at) * 1000 as tick, extract(epoch from inserted_at) * 1000 as fired
           from ${s}.cron_ticks where name = 'skew-tick' order by tick_at`,
        );
        return rows.length >= SLOTS ? rows.map((r) => ({ tick: Number(r.tick), fired: Number(r.fired) })) : null;
      },
      30_000,
    );
    for (const { tick, fired } of ticks) {
      expect(fired).toBeGreaterThanOrEqual(tick);
      expect(fired - tick).toBeLessThan(SKEW_MS / 2);
    }
    const { rows } = await db.pool.query(
      `select count(*)::int as n from ${s}.instances where machine = 'SkewTick' group by state, inserted_at having count(*) > 1`,
    );
    expect(rows).toEqual([]);
    const delays = ticks.map((t) => t.fired - t.tick);
    figures.push(
      `cron every second: ${ticks.length} slots, fired ${Math.round(Math.min(...delays))}–${Math.round(Math.max(...delays))} ms after the slot (database time)`,
    );
  });

  it("both workers ran steps and reported no engine error", () => {
    for (const w of workers) {
      expect(w.messages.filter((m) => m.type === "step-start").length, w.name).toBeGreaterThan(0);
      expect(
        w.messages.filter((m) => m.type === "engine-error"),
        w.name,
      ).toEqual([]);
    }
  });
});
