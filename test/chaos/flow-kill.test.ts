/**
 * Flow control under SIGKILL, at PR size: concurrency keys and rate limits under
 * SIGKILL. Two worker processes run 50 keys × 20 instances of a job that is
 * keyed (one run per key at a time) and rate-limited per key (10/s, burst 1),
 * while the test SIGKILLs workers. Afterwards: every instance done; no two
 * completed runs of a key overlapped; no key is left held; and no one-second
 * window (database time) drew more than 10 tokens of a key.
 */
import { describe, expect, it } from "vitest";
import { eventually, useTestDatabase } from "../support/db.js";
import { busiestSecondSql, takeLogSql } from "../support/take-log.js";
import { Fleet, forkChild, seededRandom, useChildren } from "../support/worker-process.js";
import { flowLedgerSql, KeyedWork } from "./fixtures/flow-machines.js";

useChildren();
const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

const KEYS = 50;
const PER_KEY = 20;
const KILLS = 10;

describe("concurrency keys and rate limits under SIGKILL", () => {
  it("keeps each key exclusive, leaves no key held and never exceeds a key's rate", { timeout: 120_000 }, async () => {
    const seed = Number(process.env.CHAOS_SEED ?? Date.now() % 1_000_000);
    const random = seededRandom(seed);
    console.log(`flow-kill chaos seed ${seed} (replay with CHAOS_SEED=${seed})`);
    await db.pool.query(flowLedgerSql(db.schema));
    await db.pool.query(takeLogSql(db.schema, { perKey: { rate: 10, capacity: 1 } }));

    const fleet = new Fleet((slot, generation) =>
      forkChild(new URL("./fixtures/flow-worker.ts", import.meta.url), {
        name: `gd-flow${slot}-${generation}`,
        env: { DATABASE_URL: db.url, GD_SCHEMA: db.schema, GD_CONCURRENCY: "8", GD_LEASE: "2s", GD_REAPER: "500ms" },
      }),
    );
    try {
      await fleet.start(2);
      const client = db.engine({ poolSize: 2 });
      await client.start();
      const items = [];
      for (let i = 0; i < PER_KEY; i++)
        for (let k = 0; k < KEYS; k++)
          items.push({ machine: KeyedWork, args: { key: `k${k}` }, concurrencyKey: `k${k}` });
      const ids = (await client.insertMany(items)).map((r) => r.id);

      // Kill a worker that holds keys right now, then wait for its replacement.
      let killedHolding = 0;
      for (let round = 0; round < KILLS; round++) {
        await eventually("two live workers", () => fleet.ready().length >= 2, 60_000);
        await new Promise((resolve) => setTimeout(resolve, 150 + random() * 350));
        const { rows } = await db.pool.query<{ leased_by: string }>(
          `select distinct leased_by from ${s}.instances where status = 'running'`,
        );
        const busy = fleet.ready().filter((c) => rows.some((r) => r.leased_by === c.name));
        if (busy.length === 0) break; // the work is done already
        killedHolding++;
        await fleet.kill(busy[Math.floor(random() * busy.length)]!);
      }

      await eventually(
        "every instance done",
        async () => {
          const { rows } = await db.pool.query<{ n: number }>(
            `select count(*)::int as n from ${s}.instances where status = 'done'`,
          );
          return rows[0]!.n === KEYS * PER_KEY;
        },
        60_000,
      ).catch((error: unknown) => {
        throw new Error(`${String(error)}\nseed ${seed}\n${fleet.outputs()}`);
      });
      expect(ids).toHaveLength(KEYS * PER_KEY);
      expect(killedHolding).toBeGreaterThan(0);

      // Exclusivity: completed runs of one key never overlap. (A killed run has no end;
      // its successor could only claim after the lease expired, and the database's
      // unique index on running keyed rows enforces it.)
      const { rows: overlaps } = await db.pool.query(
        `select a.ckey, a.instance_id, b.instance_id as other from ${s}.test_runs a join ${s}.test_runs b
           on a.ckey = b.ckey and a.run < b.run and a.ended_at is not null and b.ended_at is not null
          and a.started_at < b.ended_at and b.started_at < a.ended_at`,
      );
      expect(overlaps).toEqual([]);
      // No key left held or waiting.
      const { rows: held } = await db.pool.query(
        `select key, holders, run_at from ${s}.concurrency_keys where cardinality(holders) > 0 or run_at is not null`,
      );
      expect(held).toEqual([]);
      // Rate: at most 10 tokens of a key in any one second (limit 10/s, burst 1).
      const { rows: busiest } = await db.pool.query<{ partition: string; busiest: number }>(
        busiestSecondSql(db.schema),
      );
      expect(busiest).toHaveLength(KEYS);
      const worst = Math.max(...busiest.map((b) => b.busiest));
      console.log(`flow-kill: ${killedHolding} kills of key holders; most draws of one key in one second: ${worst}`);
      expect(worst).toBeLessThanOrEqual(10);
      expect(fleet.fatal).toEqual([]);
    } finally {
      await fleet.stop();
    }
  });
});
