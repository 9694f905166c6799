/**
 * A PgBouncer of the test's own, in transaction-pooling mode, in front of the test Postgres: a
 * generated ini and userlist in a temporary folder, a free port, trust auth (`auth_type = any`:
 * the client's user name is passed on). Debian's `pgbouncer` package provides the binary.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { accessSync, chmodSync, constants, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir, userInfo } from "node:os";
import { delimiter, join } from "node:path";
import pg from "pg";
import { eventually } from "./db.js";

export interface PgBouncer {
  /** `url`, with PgBouncer's host and port. */
  url: string;
  /** The process's output so far (for failure messages). */
  log(): string;
  stop(): Promise<void>;
}

/** The pgbouncer binary on PATH or in /usr/sbin (Debian), or undefined. */
export function findPgBouncer(): string | undefined {
  const dirs = [...(process.env.PATH ?? "").split(delimiter), "/usr/sbin", "/usr/local/sbin"];
  for (const dir of dirs) {
    const candidate = join(dir, "pgbouncer");
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {
      // not here
    }
  }
  return undefined;
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Starts PgBouncer in front of the server of `url` (pool_mode transaction); resolves once it accepts logins. */
export async function startPgBouncer(binary: string, url: string, poolSize = 8): Promise<PgBouncer> {
  const target = new URL(url);
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "gen-durable-pgbouncer-"));
  // As root, pgbouncer must drop to another user (-u), which then reads these files.
  chmodSync(dir, 0o755);
  const password = decodeURIComponent(target.password);
  const user = decodeURIComponent(target.username) || "postgres";
  const server = [
    // auth_type any: every client logs in to the server as this user.
    `user=${user}`,
    `host=${target.hostname}`,
    `port=${target.port || 5432}`,
    ...(password ? [`password=${password}`] : []),
  ].join(" ");
  const ini = [
    "[databases]",
    `* = ${server}`,
    "[pgbouncer]",
    "listen_addr = 127.0.0.1",
    `listen_port = ${port}`,
    "unix_socket_dir =",
    "auth_type = any",
    `auth_file = ${join(dir, "userlist.txt")}`,
    "pool_mode = transaction",
    `default_pool_size = ${poolSize}`,
    "max_client_conn = 500",
    // pg sends none of these by default; a client that does must not be refused.
    "ignore_startup_parameters = extra_float_digits,options,statement_timeout",
    "",
  ].join("\n");
  writeFileSync(join(dir, "pgbouncer.ini"), ini, { mode: 0o644 });
  writeFileSync(join(dir, "userlist.txt"), `"${user}" ""\n`, {
    mode: 0o644,
  });
  const args = [...(userInfo().uid === 0 ? ["-u", "nobody"] : []), join(dir, "pgbouncer.ini")];
  const child: ChildProcess = spawn(binary, args, { stdio: ["ignore", "pipe", "pipe"] });
  let output = "";
  child.stdout!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  child.stderr!.on("data", (chunk: Buffer) => (output += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  const bouncer = new URL(url);
  bouncer.hostname = "127.0.0.1";
  bouncer.port = String(port);
  const stop = async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill("SIGTERM");
    await exited;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await eventually(
      "pgbouncer to accept a login",
      async () => {
        if (child.exitCode !== null) throw new Error(`pgbouncer exited (${child.exitCode}): ${output}`);
        const client = new pg.Client({ connectionString: bouncer.toString(), connectionTimeoutMillis: 2000 });
        try {
          await client.connect();
          await client.query("select 1");
          return true;
        } finally {
          await client.end().catch(() => {});
        }
      },
      20_000,
    ).catch((error: unknown) => {
      throw new Error(`${String(error)}\npgbouncer's output:\n${output}`);
    });
  } catch (error) {
    await stop();
    throw error;
  }
  return { url: bouncer.toString(), log: () => output, stop };
}
