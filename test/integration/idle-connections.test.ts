// An engine keeps `idleConnections` of its own pool open while idle: a statement that finds no
// open connection waits for a new one (TCP, authentication, the session's setup), and a plain
// pg.Pool closes every idle connection after 10 s.
import { randomBytes } from "node:crypto";
import type pg from "pg";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, GenDurable } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);

const Noop = defineJob({ name: "IdleNoop", queue: "idle_conn", args: z.object({}), perform: () => null });

/** The engine's own pool, whose idle timeout a test shortens (pg's default is 10 s). */
function poolOf(engine: GenDurable): pg.Pool {
  return (engine as unknown as { pool: pg.Pool }).pool;
}

/** A connection string whose sessions carry a name of their own, to count them on the server. */
function named(): { url: string; name: string } {
  const name = `idle_${randomBytes(4).toString("hex")}`;
  return { url: `${db.url}${db.url.includes("?") ? "&" : "?"}application_name=${name}`, name };
}

async function sessions(name: string): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(
    "select count(*)::int as n from pg_stat_activity where application_name = $1",
    [name],
  );
  return rows[0]!.n;
}

/** Makes the pool open `n` connections at once, each busy for a moment. */
async function grow(pool: pg.Pool, n: number): Promise<void> {
  await Promise.all(Array.from({ length: n }, () => pool.query("select pg_sleep(0.05)")));
}

describe("idle connections", () => {
  it("start() opens them, and the pool closes only those beyond them once idle", async () => {
    const { url, name } = named();
    const engine = new GenDurable({ connectionString: url, schema: db.schema, idleConnections: 3, poolSize: 6 });
    try {
      await engine.start();
      const pool = poolOf(engine);
      expect(pool.totalCount).toBe(3);
      expect(await sessions(name)).toBe(3);

      await grow(pool, 6);
      expect(pool.totalCount).toBe(6);
      // A short idle timeout is set when a connection is given back: use them all once more.
      pool.options.idleTimeoutMillis = 50;
      await grow(pool, 6);
      await eventually("the pool back at 3 connections", () => pool.totalCount === 3);
      await eventually("3 sessions on the server", async () => (await sessions(name)) === 3);
      // And still usable: an insert goes through one of them.
      await engine.insert(Noop, { args: {} });
      expect(pool.totalCount).toBe(3);
    } finally {
      await engine.stop();
    }
  });

  it("a node with queues keeps them too, beside its own LISTEN and lease connections", async () => {
    const engine = new GenDurable({
      connectionString: db.url,
      schema: db.schema,
      queues: { idle_conn: 2 },
      machines: [Noop],
      pollInterval: 200,
    });
    try {
      await engine.start();
      const pool = poolOf(engine);
      expect(pool.totalCount).toBeGreaterThanOrEqual(2);
      pool.options.idleTimeoutMillis = 50;
      await grow(pool, 5);
      await eventually("the pool back at the default 2", () => pool.totalCount === 2);
      const { id } = await engine.insert(Noop, { args: {} });
      await engine.wait(id, { timeout: "10s" });
    } finally {
      await engine.stop();
    }
  });

  it("idleConnections: 0 lets every idle connection close, as a plain pg.Pool does", async () => {
    const { url, name } = named();
    const engine = new GenDurable({ connectionString: url, schema: db.schema, idleConnections: 0 });
    try {
      await engine.start();
      const pool = poolOf(engine);
      pool.options.idleTimeoutMillis = 50;
      await grow(pool, 3);
      await eventually("no connection left open", () => pool.totalCount === 0);
      await eventually("no session on the server", async () => (await sessions(name)) === 0);
    } finally {
      await engine.stop();
    }
  });

  it("holds at most poolSize, and a bad count is refused by name", () => {
    const small = new GenDurable({ connectionString: db.url, schema: db.schema, poolSize: 1 });
    expect(poolOf(small).options.min).toBe(1);
    void small.stop();
    expect(() => new GenDurable({ connectionString: db.url, idleConnections: -1 })).toThrowError(
      "idleConnections must be an integer from 0 to 1000, got -1",
    );
    expect(() => new GenDurable({ connectionString: db.url, idleConnections: 1.5 })).toThrowError(
      "idleConnections must be an integer from 0 to 1000",
    );
  });
});
