/**
 * Test isolation: every test file gets its own migrated schema, dropped at the
 * end, so files run in parallel against one database without sharing rows.
 */
import { createHash, randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, inject } from "vitest";
import { GenDurable, migrate, type GenDurableOptions } from "../../src/index.js";

export const databaseUrl = (): string => inject("databaseUrl");

export interface TestDatabase {
  url: string;
  schema: string;
  pool: pg.Pool;
  /** New engine on this schema; stopped after the file. */
  engine(options?: Omit<GenDurableOptions, "connectionString" | "schema">): GenDurable;
}

export async function useTestDatabase(file: string): Promise<TestDatabase> {
  const url = databaseUrl();
  const schema = `t_${createHash("sha1").update(file).digest("hex").slice(0, 8)}_${randomBytes(3).toString("hex")}`;
  await migrate({ connectionString: url, schema });
  const pool = new pg.Pool({ connectionString: url, max: 5 });
  const engines: GenDurable[] = [];
  afterAll(async () => {
    for (const engine of engines) await engine.stop();
    await pool.query(`drop schema if exists ${schema} cascade`);
    await pool.end();
  });
  return {
    url,
    schema,
    pool,
    engine(options = {}) {
      const engine = new GenDurable({ connectionString: url, schema, pollInterval: 200, ...options });
      engines.push(engine);
      return engine;
    },
  };
}

/** Waits for `check` to return a truthy value, polling until `timeoutMs`; fails with `what` on timeout. */
export async function eventually<T>(
  what: string,
  check: () => Promise<T> | T,
  timeoutMs = 20_000,
): Promise<Exclude<T, null | undefined | false | 0 | "">> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (let pause = 5; ; pause = Math.min(pause * 2, 100)) {
    try {
      const value = await check();
      if (value) return value as Exclude<T, null | undefined | false | 0 | "">;
    } catch (error) {
      last = error;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ""}`);
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
}

/**
 * A database of its own on the test server (name `prefix_<random>`), for what must not share one:
 * server-wide counters such as pg_stat_database.deadlocks, the `public` schema, whole-database
 * settings. `drop` removes it, closing whatever is still connected.
 */
export async function createDatabase(
  prefix: string,
): Promise<{ name: string; url: string; drop: () => Promise<void> }> {
  const server = databaseUrl();
  const name = `${prefix}_${randomBytes(4).toString("hex")}`.slice(0, 63);
  const admin = async (sql: string) => {
    const client = new pg.Client({ connectionString: server });
    await client.connect();
    try {
      await client.query(sql);
    } finally {
      await client.end();
    }
  };
  await admin(`create database ${name}`);
  const url = new URL(server);
  url.pathname = `/${name}`;
  return { name, url: url.toString(), drop: () => admin(`drop database if exists ${name} with (force)`) };
}
