/**
 * Vacuum health of the busiest tables: the migration gives them storage and
 * autovacuum settings of their own; `gen-durable status`, the table gauges
 * and the engine's warnings report dead tuples, the last vacuum, and whether
 * autovacuum can run on them at all (server `autovacuum`, table
 * `autovacuum_enabled`).
 */
import { MeterProvider, MetricReader, type MetricData } from "@opentelemetry/sdk-metrics";
import { beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { runCli } from "../../src/cli/cli.js";
import { COMMANDS } from "../../src/cli/commands/index.js";
import { defineJob, type EngineEvents, type Logger } from "../../src/index.js";
import { METRIC } from "../../src/telemetry/index.js";
import { HOT_TABLES } from "../../src/sql/tables.js";
import {
  DEAD_TUPLES_WARN,
  readVacuumHealth,
  vacuumWarnings,
  type TableHealth,
} from "../../src/telemetry/table-health.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

const Noop = defineJob({ name: "VacuumNoop", queue: "vacuum", args: z.object({}), perform: () => "ok" });

let serverAutovacuum: boolean;
beforeAll(async () => {
  const { rows } = await db.pool.query<{ on: boolean }>(
    "select current_setting('autovacuum')::boolean and current_setting('track_counts')::boolean as on",
  );
  serverAutovacuum = rows[0]!.on;
});

async function reloptions(table: string): Promise<Record<string, string>> {
  const { rows } = await db.pool.query<{ reloptions: string[] | null }>(
    `select c.reloptions from pg_class c join pg_namespace n on n.oid = c.relnamespace where n.nspname = $1 and c.relname = $2`,
    [db.schema, table],
  );
  return Object.fromEntries((rows[0]!.reloptions ?? []).map((o) => o.split("=") as [string, string]));
}

function health(over: Partial<TableHealth>): TableHealth {
  return {
    table: "instances",
    liveTuples: 1000,
    deadTuples: 0,
    lastVacuum: null,
    lastAutovacuum: null,
    autovacuumEnabled: true,
    ...over,
  };
}

describe("vacuum health", () => {
  it("the migration gives the busy tables fillfactor and autovacuum settings of their own", async () => {
    expect(await reloptions("instances")).toMatchObject({
      fillfactor: "40",
      autovacuum_vacuum_scale_factor: "0.02",
      autovacuum_vacuum_threshold: "1000",
      autovacuum_vacuum_cost_limit: "2000",
    });
    expect(await reloptions("concurrency_keys")).toMatchObject({
      fillfactor: "50",
      autovacuum_vacuum_scale_factor: "0",
      autovacuum_vacuum_threshold: "500",
    });
    expect(await reloptions("rate_limit_buckets")).toMatchObject({
      fillfactor: "50",
      autovacuum_vacuum_scale_factor: "0",
    });
    for (const table of HOT_TABLES)
      expect(await reloptions(table), table).toHaveProperty("autovacuum_vacuum_cost_limit", "2000");
  });

  it("warns when autovacuum cannot run (server off, or off for a table) and when dead tuples pile up", () => {
    const tables = [health({ table: "instances" }), health({ table: "signals" })];
    expect(vacuumWarnings(true, true, tables)).toEqual([]);
    const serverOff = vacuumWarnings(false, true, tables);
    expect(serverOff).toHaveLength(1);
    expect(serverOff[0]).toMatchObject({ kind: "autovacuum_off" });
    expect(serverOff[0]!.message).toMatch(/the server has autovacuum = off \(per-table settings cannot turn it on\)/);
    expect(vacuumWarnings(true, false, tables)[0]!.message).toMatch(/track_counts = off/);
    const tableOff = vacuumWarnings(true, true, [health({ table: "signals", autovacuumEnabled: false })]);
    expect(tableOff).toEqual([expect.objectContaining({ kind: "autovacuum_off", table: "signals" })]);
    // Dead tuples: both at least 100,000 and at least as many as live ones.
    const { atLeast } = DEAD_TUPLES_WARN;
    expect(vacuumWarnings(true, true, [health({ deadTuples: atLeast - 1, liveTuples: 0 })])).toEqual([]);
    expect(vacuumWarnings(true, true, [health({ deadTuples: atLeast * 2, liveTuples: atLeast * 3 })])).toEqual([]);
    const piled = vacuumWarnings(true, true, [
      health({ deadTuples: 383_000, liveTuples: 37_000, lastAutovacuum: new Date("2026-01-01T00:00:00Z") }),
    ]);
    expect(piled).toEqual([expect.objectContaining({ kind: "dead_tuples", table: "instances" })]);
    expect(piled[0]!.message).toContain(
      "383000 dead tuples against 37000 live ones (last vacuum: 2026-01-01T00:00:00.000Z)",
    );
  });

  it("reads dead tuples per table and whether autovacuum may run on it", async () => {
    await db.pool.query(`alter table ${s}.signals set (autovacuum_enabled = false)`);
    try {
      const client = db.engine({});
      await client.start();
      const ids = (
        await client.insertMany(Array.from({ length: 300 }, () => ({ machine: Noop, args: {}, delay: "1h" })))
      ).map((r) => r.id);
      // Each update leaves a dead version behind (no vacuum runs on this schema meanwhile: see below).
      for (let i = 0; i < 3; i++)
        await db.pool.query(`update ${s}.instances set priority = priority + 1 where id = any($1::bigint[])`, [ids]);
      const read = await eventually("dead tuples counted", async () => {
        const h = await readVacuumHealth(db.pool, db.schema);
        const instances = h.tables.find((t) => t.table === "instances");
        return instances && instances.deadTuples >= 300 ? h : null;
      });
      expect(read.tables.map((t) => t.table).sort()).toEqual([...HOT_TABLES].sort());
      expect(read.autovacuum).toBe(serverAutovacuum);
      expect(read.tables.find((t) => t.table === "signals")!.autovacuumEnabled).toBe(false);
      expect(read.tables.find((t) => t.table === "instances")!.autovacuumEnabled).toBe(true);
      // Whichever applies on this server: autovacuum off everywhere, or off for signals.
      expect(read.warnings).toContainEqual(
        serverAutovacuum
          ? expect.objectContaining({ kind: "autovacuum_off", table: "signals" })
          : expect.objectContaining({ kind: "autovacuum_off" }),
      );

      // Another test's open transaction in this database may hold the xmin horizon for a while, and
      // vacuum removes nothing it could still see: vacuum again until the dead rows are gone.
      const after = await eventually(
        "the vacuum seen, and the dead rows gone",
        async () => {
          await db.pool.query(`vacuum ${s}.instances`);
          const instances = (await readVacuumHealth(db.pool, db.schema)).tables.find((t) => t.table === "instances")!;
          return instances.lastVacuum !== null && instances.deadTuples < 300 ? instances : null;
        },
        30_000,
      );
      expect(after.deadTuples).toBeLessThan(300);
    } finally {
      await db.pool.query(`alter table ${s}.signals reset (autovacuum_enabled)`);
    }
  });

  it("a worker node emits engine:warning and logs it; status shows the tables and the warning", async () => {
    await db.pool.query(`alter table ${s}.rate_limit_buckets set (autovacuum_enabled = false)`);
    try {
      const warned: Array<EngineEvents["engine:warning"]> = [];
      const logged: Array<{ fields: object; message?: string }> = [];
      const at = () => () => {};
      const logger: Logger = {
        debug: at(),
        info: at(),
        error: at(),
        warn: (fields, message) => void logged.push({ fields, message }),
      };
      const worker = db.engine({ queues: { vacuum: 1 }, machines: [Noop], logger });
      worker.on("engine:warning", (w) => void warned.push(w));
      await worker.start();
      // The check runs a few seconds after start, then once a minute.
      const expected = serverAutovacuum
        ? { kind: "autovacuum_off", table: "rate_limit_buckets" }
        : { kind: "autovacuum_off" };
      await eventually(
        "the warning",
        () => warned.some((w) => Object.entries(expected).every(([k, v]) => w[k as keyof typeof w] === v)),
        15_000,
      );
      const line = logged.find((l) => l.message?.startsWith("gen-durable: autovacuum"));
      expect(line?.fields).toMatchObject({ kind: "autovacuum_off" });
      // Said once, not on every check.
      const count = warned.length;
      worker._testing().wake();
      await new Promise((resolve) => setTimeout(resolve, 300));
      expect(warned.length).toBe(count);

      let stdout = "";
      const run = (args: string[]) =>
        runCli([...args, "--schema", db.schema], COMMANDS, {
          out: (l) => (stdout += l + "\n"),
          err: () => {},
          env: { DATABASE_URL: db.url },
        });
      expect(await run(["status", "--json"])).toBe(0);
      const report = JSON.parse(stdout) as {
        vacuum: {
          autovacuum: boolean;
          tables: Array<{ table: string; liveTuples: number; deadTuples: number; autovacuumEnabled: boolean }>;
          warnings: unknown[];
        };
      };
      expect(report.vacuum.autovacuum).toBe(serverAutovacuum);
      expect(report.vacuum.tables.map((t) => t.table).sort()).toEqual([...HOT_TABLES].sort());
      expect(report.vacuum.tables.find((t) => t.table === "rate_limit_buckets")).toMatchObject({
        autovacuumEnabled: false,
      });
      expect(report.vacuum.warnings).toContainEqual(expect.objectContaining(expected));
      stdout = "";
      expect(await run(["status"])).toBe(0);
      expect(stdout).toMatch(
        new RegExp(`^tables \\(autovacuum ${serverAutovacuum ? "on" : "OFF"} on the server\\):$`, "m"),
      );
      expect(stdout).toMatch(/^TABLE\s+LIVE\s+DEAD\s+LAST VACUUM\s+LAST AUTOVACUUM\s+AUTOVACUUM$/m);
      expect(stdout).toMatch(/^rate_limit_buckets\s+\d+\s+\d+\s+\S.*\s+OFF$/m);
      expect(stdout).toMatch(/^warning: autovacuum /m);
    } finally {
      await db.pool.query(`alter table ${s}.rate_limit_buckets reset (autovacuum_enabled)`);
    }
  });

  it("telemetry: dead and live tuples and the time since the last vacuum, per table", async () => {
    class Reader extends MetricReader {
      protected override async onShutdown(): Promise<void> {}
      protected override async onForceFlush(): Promise<void> {}
    }
    const reader = new Reader();
    const meterProvider = new MeterProvider({ readers: [reader] });
    const engine = db.engine({
      queues: { vacuum: 1 },
      machines: [Noop],
      telemetry: { meterProvider, queueDepthInterval: 0 },
    });
    await engine.start();
    await db.pool.query(`vacuum ${s}.concurrency_keys`);
    const metric = async (name: string): Promise<MetricData | undefined> =>
      (await reader.collect()).resourceMetrics.scopeMetrics
        .flatMap((m) => m.metrics)
        .find((m) => m.descriptor.name === name);
    const points = (m: MetricData | undefined) =>
      (m?.dataPoints ?? []) as Array<{ value: number; attributes: Record<string, unknown> }>;
    const dead = points(await metric(METRIC.tableDeadTuples));
    expect(dead.map((p) => p.attributes["gen_durable.table"]).sort()).toEqual([...HOT_TABLES].sort());
    expect(dead.every((p) => Number.isFinite(p.value) && p.value >= 0)).toBe(true);
    expect(points(await metric(METRIC.tableLiveTuples))).toHaveLength(HOT_TABLES.length);
    const age = await eventually("the vacuum's age observed", async () =>
      points(await metric(METRIC.tableVacuumAge)).find((p) => p.attributes["gen_durable.table"] === "concurrency_keys"),
    );
    expect(age.value).toBeGreaterThanOrEqual(0);
    expect(age.value).toBeLessThan(120);
    await meterProvider.shutdown();
  });
});
