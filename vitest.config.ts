import pg from "pg";
import { defineConfig } from "vitest/config";

/** Test files run at once on 2 cores: a few, each in its own schema. */
const MAX_WORKERS = 3;
/**
 * Connections one test file may hold at its peak: the heaviest start several engines (a worker and
 * two pruners on one database, three child processes with their pools) beside their own clients.
 * With three files at once, a full run against a server of 100 connections peaked at 83 client
 * backends (sampled every 100 ms from pg_stat_activity), and a run now and then was refused one:
 * "sorry, too many clients already".
 */
const CONNECTIONS_PER_WORKER = 40;

/**
 * As many workers as the server's connections allow: DATABASE_URL's server (a stock one has 100),
 * or the embedded one the global setup starts (300, dev/postgres.ts).
 */
async function maxWorkers(): Promise<number> {
  const url = process.env.DATABASE_URL;
  if (!url) return MAX_WORKERS;
  const client = new pg.Client({ connectionString: url });
  try {
    await client.connect();
    const { rows } = await client.query<{ free: number }>(
      `select current_setting('max_connections')::int - current_setting('superuser_reserved_connections')::int as free`,
    );
    return Math.max(1, Math.min(MAX_WORKERS, Math.floor(rows[0]!.free / CONNECTIONS_PER_WORKER)));
  } catch {
    // The global setup reports an unreachable server, by name.
    return MAX_WORKERS;
  } finally {
    await client.end().catch(() => {});
  }
}

export default defineConfig(async () => ({
  test: {
    globalSetup: ["./test/support/global-setup.ts"],
    include: ["test/**/*.test.ts"],
    testTimeout: 60_000,
    hookTimeout: 60_000,
    maxWorkers: await maxWorkers(),
    typecheck: { enabled: true, include: ["test/types/**/*.test-d.ts"], tsconfig: "./tsconfig.json" },
  },
}));
