/**
 * A node claims rows ahead of its free slots (up to its concurrency more), so
 * the next step starts the moment a slot frees. SIGKILL such a node: the rows
 * it was running lost an attempt (their code ran), the rows it only held in its
 * buffer did not (their code never ran) and must come back uncharged. Here with
 * one-attempt jobs: the buffered ones must still complete.
 */
import { describe, expect, it } from "vitest";
import { eventually, useTestDatabase } from "../support/db.js";
import { Fleet, forkChild, useChildren } from "../support/worker-process.js";
import { ledgerSql, RunOnce, useLedger } from "./fixtures/machines.js";

useChildren();
const db = await useTestDatabase(import.meta.url);

const JOBS = 10;
const CONCURRENCY = 2;

describe("SIGKILL of a node holding claimed-ahead rows", () => {
  it("charges an attempt only to the steps that started", { timeout: 60_000 }, async () => {
    await db.pool.query(ledgerSql(db.schema));
    const s = `"${db.schema}"`;
    const client = db.engine({ poolSize: 2 });
    const ids = (
      await client.insertMany(Array.from({ length: JOBS }, (_, n) => ({ machine: RunOnce, args: { n } })))
    ).map((r) => r.id);

    const fleet = new Fleet(
      (slot, generation) =>
        forkChild(new URL("./fixtures/worker.ts", import.meta.url), {
          name: `gd-ahead${slot}-${generation}`,
          env: {
            DATABASE_URL: db.url,
            GD_SCHEMA: db.schema,
            GD_CONCURRENCY: String(CONCURRENCY),
            GD_LEASE: "2s",
            GD_REAPER: "500ms",
            GD_HANG: "1",
          },
        }),
      { respawn: false },
    );
    try {
      await fleet.start(1);
      const victim = fleet.ready()[0]!;
      // Two steps running (and hanging), two more rows claimed ahead into the buffer.
      await eventually("the victim running 2 steps with 2 more claimed ahead", async () => {
        const { rows } = await db.pool.query<{ held: number; ran: number }>(
          `select (select count(*)::int from ${s}.instances where status = 'running' and leased_by = $1) as held,
                  (select count(*)::int from ${s}.test_external) as ran`,
          [victim.name],
        );
        return rows[0]!.held === CONCURRENCY * 2 && rows[0]!.ran === CONCURRENCY;
      });
      await fleet.kill(victim);
    } finally {
      await fleet.stop();
    }

    // Another node finishes the work once the dead node's leases expire.
    useLedger(db.pool, db.schema);
    const worker = db.engine({
      queues: { chaos: 10 },
      machines: [RunOnce],
      leaseDuration: "2s",
      reaperInterval: "200ms",
    });
    await worker.start();
    const finished = await Promise.all(ids.map((id) => client.wait(id, { timeout: 30_000 })));

    const { rows: runs } = await db.pool.query<{ id: string; n: number }>(
      `select i.id::text as id, count(e.*)::int as n from ${s}.instances i left join ${s}.test_external e on e.instance_id = i.id group by i.id`,
    );
    const runCount = new Map(runs.map((r) => [r.id, r.n]));
    const failed = finished.filter((i) => i.status === "failed");
    const done = finished.filter((i) => i.status === "done");
    console.log(
      `claim-ahead kill: ${failed.length} failed (ran on the killed node), ${done.length} done; runs ${JSON.stringify([...runCount.values()])}`,
    );

    // The two steps that ran on the killed node used their only attempt; nothing else did.
    expect(failed).toHaveLength(CONCURRENCY);
    for (const instance of failed) {
      expect(runCount.get(instance.id)).toBe(1);
      expect(instance.error?.message).toMatch(/exhausted its 1 attempts.*lost its worker/);
    }
    expect(done).toHaveLength(JOBS - CONCURRENCY);
    for (const instance of done) expect(runCount.get(instance.id), `runs of ${instance.id}`).toBe(1);
    // A row that never started leaves no trace in its history.
    for (const instance of done) {
      const history = await client.history(instance.id);
      expect(history.map((t) => t.outcome)).toEqual(["done"]);
    }
  });
});
