// Connection strings carry passwords: whatever shape the user's string has, the
// CLI prints none of it. Each form runs the real executable (stdout and stderr
// as a shell sees them), from --database-url and from DATABASE_URL.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { redact } from "../../src/cli/db.js";
import { cliInProcess as inProcess, spawnCli as cli, type Run } from "../support/cli.js";
import { databaseUrl } from "../support/db.js";

const url = databaseUrl();
const pool = new pg.Pool({ connectionString: url, max: 1 });
afterAll(() => pool.end());
// Spawning Node.js with TypeScript is slow on a busy machine.
const SPAWNING = { timeout: 240_000 };

// The test server, for the forms that reach it.
const live = new URL(url);
const hostPort = `${live.hostname}:${live.port || 5432}`;
const database = live.pathname.slice(1);

const SECRET = "Zq8vR2";
// Every shape a password can take; nothing listens on port 1, or the server is the real one.
const FORMS: Array<[string, string, string]> = [
  ["a / in the userinfo password", `postgres://app:${SECRET}/x@127.0.0.1:1/x`, `${SECRET}/x`],
  ["a # in the userinfo password", `postgres://app:${SECRET}#x@127.0.0.1:1/x`, `${SECRET}#x`],
  ["a ? in the userinfo password", `postgres://app:${SECRET}?x@127.0.0.1:1/x`, `${SECRET}?x`],
  [
    "a password of digits and a /, read as a port and a path",
    `postgres://app:4242/${SECRET}@127.0.0.1:1/x`,
    `4242/${SECRET}`,
  ],
  ["an @ in the userinfo password", `postgres://app:${SECRET}@x@127.0.0.1:1/x`, `${SECRET}@x`],
  ["a plain userinfo password", `postgres://app:${SECRET}@127.0.0.1:1/x`, SECRET],
  ["a ?password= parameter", `postgres://app@127.0.0.1:1/x?password=${SECRET}`, SECRET],
  [
    "a percent-encoded ?pass%77ord= parameter",
    `postgres://app@127.0.0.1:1/x?sslmode=disable&pass%77ord=${SECRET}`,
    SECRET,
  ],
  ["a libpq key=value string", `host=127.0.0.1 port=1 user=app password=${SECRET} dbname=x`, SECRET],
  ["a libpq key=value string with a quoted password", `host=127.0.0.1 password='${SECRET} x' dbname=x`, `${SECRET} x`],
  [
    "a key=value parameter after a real server's URL (the server echoes the database name)",
    `postgres://postgres@${hostPort}/${database} password=${SECRET}`,
    SECRET,
  ],
  [
    "an @ after the host of a real server (the server echoes the database name)",
    `postgres://postgres@${hostPort}/${database}:${SECRET}@x`,
    SECRET,
  ],
  ["a scheme-less user:password@host", `app:${SECRET}@127.0.0.1:1/x`, SECRET],
  ["a URL that is not Postgres'", `mysql://root:${SECRET}@127.0.0.1/x`, SECRET],
];

function expectNoSecret(run: Run, secret: string): void {
  expect(run.code, run.stderr).not.toBe(0);
  expect(run.stdout + run.stderr).not.toContain(secret);
  // Not even the part before a character the parser stops at.
  expect(run.stdout + run.stderr).not.toContain(SECRET);
}

describe("the CLI never prints a password", SPAWNING, () => {
  it.each(FORMS)("%s: --database-url and DATABASE_URL, as a process", async (_what, connection, secret) => {
    const run = await cli(["status", "--database-url", connection]);
    expectNoSecret(run, secret);
    expect(run.stderr).toMatch(/^gen-durable status: /);
    expectNoSecret(await cli(["migrate"], { DATABASE_URL: connection }), secret);
  });

  it.each(FORMS)("%s: every connecting command, in process", async (_what, connection, secret) => {
    for (const args of [
      ["status"],
      ["list"],
      ["show", "1"],
      ["signal", "k", "go"],
      ["cancel", "1"],
      ["retry", "1"],
      ["prune"],
      ["migrate"],
    ]) {
      expectNoSecret(await inProcess(args, { DATABASE_URL: connection }), secret);
    }
  });

  it("a URL the parser would misread is refused before connecting, with the fix", async () => {
    const run = await cli(["status", "--database-url", `postgres://app:${SECRET}/x@127.0.0.1:1/x`]);
    expect(run.stderr).toContain("percent-encode");
    expect(run.stderr).toContain("postgres://app:***@127.0.0.1:1/x");
    const keyValue = await inProcess(["status"], { DATABASE_URL: `host=127.0.0.1 password=${SECRET}` });
    expect(keyValue.stderr).toContain("key=value");
    expect(keyValue.stderr).toContain("password=***");
  });

  it("a URL passed where no argument goes is not echoed in the usage error", async () => {
    for (const args of [
      ["status", `postgres://app:${SECRET}@127.0.0.1:1/x`],
      ["list", "--database-url=postgres://app:x@127.0.0.1:1/x", `postgres://app:${SECRET}@h/x`],
    ]) {
      const run = await cli(args);
      expect(run.code).toBe(2);
      expect(run.stderr).toContain("unexpected argument");
      expect(run.stderr).not.toContain(SECRET);
    }
  });

  it("a usable URL still works and its messages keep what is not secret", async () => {
    const role = `gd_secret_${randomBytes(4).toString("hex")}`;
    await pool.query(`create role ${role} login password '${SECRET}'`);
    try {
      const withPassword = new URL(url);
      withPassword.username = role;
      withPassword.password = SECRET;
      withPassword.pathname = "/gd_no_such_database";
      const run = await inProcess(["status"], { DATABASE_URL: withPassword.toString() });
      expect(run.stderr).toContain(`postgres://${role}:***@`);
      expect(run.stderr).toContain('database "gd_no_such_database" does not exist');
      expect(run.stderr).not.toContain(SECRET);
    } finally {
      await pool.query(`drop role ${role}`);
    }
  });

  it("redact() masks the passwords and keeps the rest of the text", () => {
    expect(redact("postgres://u:p@h:5432/db?sslmode=require&password=x")).toBe(
      "postgres://u:***@h:5432/db?sslmode=require&password=***",
    );
    expect(redact("host=h user=u password='a b\\' c' dbname=d")).toBe('"host=h user=u password=*** dbname=d"');
    expect(redact("postgres://u:p/q@h/db")).toBe('"postgres://u:***@h/db"');
    expect(redact("postgres://u@h/db")).toBe("postgres://u@h/db");
    expect(redact("not a url")).toBe('"not a url"');
  });
});
