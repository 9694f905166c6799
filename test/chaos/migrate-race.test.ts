/**
 * Concurrent migrations (PR size): ten processes call migrate() on the
 * same fresh schema at once. Each migration must be applied exactly once, every
 * process must succeed, and the schema must work afterwards.
 */
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, GenDurable, Migration } from "../../src/index.js";
import { databaseUrl } from "../support/db.js";
import { forkChild, useChildren, type ChildMessage } from "../support/worker-process.js";

useChildren();

const PROCESSES = 10;
const url = databaseUrl();
const schema = `t_migrate_race_${randomBytes(4).toString("hex")}`;
const pool = new pg.Pool({ connectionString: url, max: 2 });
afterAll(async () => {
  await pool.query(`drop schema if exists "${schema}" cascade`);
  await pool.end();
});

const Echo = defineJob({
  name: "MigrateRaceEcho",
  args: z.object({ n: z.number() }),
  perform: async (args) => ({ n: args.n }),
});

describe("migrate() raced by ten processes", () => {
  it("applies every migration exactly once, all callers succeed, and the schema works", async () => {
    const { rows: before } = await pool.query(`select 1 from pg_namespace where nspname = $1`, [schema]);
    expect(before).toEqual([]);

    const children = Array.from({ length: PROCESSES }, (_, i) =>
      forkChild(new URL("./fixtures/migrator.ts", import.meta.url), {
        name: `gd-migrate-${i}`,
        env: { DATABASE_URL: url, GD_SCHEMA: schema },
      }),
    );
    await Promise.all(children.map((c) => c.waitFor("ready", 30_000)));
    const released = Date.now();
    for (const child of children) child.send({ type: "go" });
    const results = (await Promise.all(children.map((c) => c.waitFor("result", 30_000)))) as Array<
      ChildMessage & { applied?: number[]; error?: string; ms: number }
    >;
    const allDone = Date.now() - released;
    expect(await Promise.all(children.map((c) => c.exited))).toEqual(children.map(() => ({ code: 0, signal: null })));

    // Every process succeeded.
    expect(results.filter((r) => r.error !== undefined)).toEqual([]);
    // Each migration was applied by exactly one of them; the others found nothing to do.
    const all = Migration.list().map((m) => m.id);
    const applied = results.flatMap((r) => r.applied!);
    expect(applied.sort((a, b) => a - b)).toEqual(all);
    expect(results.filter((r) => r.applied!.length > 0)).toHaveLength(1);
    // One row per migration.
    const { rows } = await pool.query<{ id: number; name: string; n: number }>(
      `select id, name, count(*) over (partition by id)::int as n from "${schema}".migrations order by id`,
    );
    expect(rows).toEqual(Migration.list().map((m) => ({ id: m.id, name: m.name, n: 1 })));

    // The schema works: an engine starts on it and runs a job to the end.
    const engine = new GenDurable({
      connectionString: url,
      schema,
      queues: { default: 2 },
      machines: [Echo],
      pollInterval: 100,
    });
    try {
      await engine.start();
      const { id } = await engine.insert(Echo, { args: { n: 7 } });
      const done = await engine.wait(id, { timeout: 15_000 });
      expect(done.status).toBe("done");
      expect(done.result).toEqual({ n: 7 });
    } finally {
      await engine.stop();
    }
    console.log(
      `migrate race: ${PROCESSES} processes all returned ${allDone} ms after release; per process ${results.map((r) => r.ms).join(",")} ms`,
    );
  });
});
