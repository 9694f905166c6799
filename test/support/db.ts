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

/**
 * Drops the file's schema. The drop locks the schema's tables one by one; a statement still in
 * flight from the file (a child process being killed, a step's late commit) locks several of them
 * too, and Postgres may end the cycle by failing the drop (deadlock detected; seen once on CI,
 * after the hung-steps file). The drop is then tried again: a teardown, not what a test checks.
 */
async function dropSchema(pool: pg.Pool, schema: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await pool.query(`drop schema if exists ${schema} cascade`);
      return;
    } catch (error) {
      if ((error as { code?: string }).code !== "40P01" || attempt >= 5) throw error;
    }
  }
}

export async function useTestDatabase(file: string): Promise<TestDatabase> {
  const url = databaseUrl();
  const schema = `t_${createHash("sha1").update(file).digest("hex").slice(0, 8)}_${randomBytes(3).toString("hex")}`;
  await migrate({ connectionString: url, schema });
  const pool = new pg.Pool({ connectionString: url, max: 5 });
  const engines: GenDurable[] = [];
  afterAll(async () => {
    for (const engine of engines) await engine.stop();
    await dropSchema(pool, schema);
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
 * Rows of `table` (a qualified name) this connection has read, by index fetches and sequential
 * scans, and not yet reported to the statistics: its current transaction's and those of earlier
 * transactions still pending. So a difference taken inside one transaction counts what ran in
 * between.
 */
export async function rowsReadSoFar(conn: pg.ClientBase, table: string): Promise<number> {
  const { rows } = await conn.query<{ n: number }>(
    `select (idx_tup_fetch + seq_tup_read)::int as n from pg_stat_xact_user_tables where relid = $1::regclass`,
    [table],
  );
  return rows[0]!.n;
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
  const drop = async () => {
    const client = new pg.Client({ connectionString: server });
    await client.connect();
    try {
      await dropDatabase(client, name);
    } finally {
      await client.end();
    }
  };
  return { name, url: url.toString(), drop };
}

/**
 * Drops a test's database once the connections to it have closed. `with (force)` terminates those
 * still open, and a client of this process still closing would get that as an error nobody listens
 * to any more: so wait a while for them to go (pools ended just before may still be closing).
 */
export async function dropDatabase(admin: pg.ClientBase | pg.Pool, name: string): Promise<void> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const { rows } = await admin.query<{ n: number }>(
      "select count(*)::int as n from pg_stat_activity where datname = $1",
      [name],
    );
    if (rows[0]!.n === 0 || Date.now() > deadline) break;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  await admin.query(`drop database if exists ${name} with (force)`);
}
