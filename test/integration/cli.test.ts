// The `gen-durable` command line, run as a real process (tsx on the sources)
// against the test database, each run in a fresh schema.
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { fileURLToPath } from "node:url";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { Migration } from "../../src/index.js";
import { databaseUrl } from "../support/db.js";
import { runCli } from "../../src/cli/cli.js";
import { COMMANDS } from "../../src/cli/commands/index.js";

const root = fileURLToPath(new URL("../../", import.meta.url));
const tsx = fileURLToPath(new URL("../../node_modules/.bin/tsx", import.meta.url));
const url = databaseUrl();
const pool = new pg.Pool({ connectionString: url, max: 2 });
const schemas: string[] = [];

function freshSchema(): string {
  const schema = `cli_${randomBytes(4).toString("hex")}`;
  schemas.push(schema);
  return schema;
}

afterAll(async () => {
  for (const schema of schemas) await pool.query(`drop schema if exists ${schema} cascade`);
  await pool.end();
});

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `gen-durable ...args`; DATABASE_URL is unset unless `env` sets it. */
function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const base = { ...process.env };
  delete base.DATABASE_URL;
  return new Promise((resolve) => {
    execFile(tsx, ["src/cli/main.ts", ...args], { cwd: root, env: { ...base, ...env }, timeout: 45_000 }, (error, stdout, stderr) => {
      const code = error ? (typeof error.code === "number" ? error.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** The same entry point in this process: fast, for the command-line parsing paths. */
async function inProcess(args: string[], env: Record<string, string> = {}): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const code = await runCli(args, COMMANDS, { out: (line) => (stdout += line + "\n"), err: (line) => (stderr += line + "\n"), env });
  return { code, stdout, stderr };
}

async function schemaExists(schema: string): Promise<boolean> {
  const { rows } = await pool.query("select 1 from pg_namespace where nspname = $1", [schema]);
  return rows.length === 1;
}

const noStack = (text: string) => expect(text).not.toMatch(/^\s+at /m);

describe("gen-durable migrate", () => {
  it("migrates a fresh schema from DATABASE_URL, then finds it up to date", async () => {
    const schema = freshSchema();
    const last = Migration.list().length;
    const first = await cli(["migrate", "--schema", schema], { DATABASE_URL: url });
    expect(first.stderr).toBe("");
    expect(first.code).toBe(0);
    expect(first.stdout.trim()).toBe(last === 1 ? `applied migration 1 to schema ${schema}` : `applied migrations 1..${last} to schema ${schema}`);
    const { rows } = await pool.query(`select id from ${schema}.migrations order by id`);
    expect(rows.map((r) => r.id)).toEqual(Migration.list().map((m) => m.id));
    await pool.query(`select count(*) from ${schema}.instances`);

    const second = await cli(["migrate", "--schema", schema], { DATABASE_URL: url });
    expect(second.code).toBe(0);
    expect(second.stdout.trim()).toBe(`schema ${schema} is up to date (migration ${last} of ${last})`);
  });

  it("takes --database-url over DATABASE_URL", async () => {
    const schema = freshSchema();
    const run = await cli(["migrate", `--schema=${schema}`, "--database-url", url], { DATABASE_URL: "postgres://nobody@127.0.0.1:1/nothing" });
    expect(run.stderr).toBe("");
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^applied migrations? 1.* to schema ${schema}\\n$`));
    expect(await schemaExists(schema)).toBe(true);
  });

  it("applies each migration once when several processes migrate at once", async () => {
    const schema = freshSchema();
    const runs = await Promise.all([1, 2, 3].map(() => cli(["migrate", "--schema", schema], { DATABASE_URL: url })));
    for (const run of runs) expect(run.code, run.stderr).toBe(0);
    expect(runs.filter((r) => r.stdout.startsWith("applied ")).length).toBe(1);
    expect(runs.filter((r) => r.stdout.includes("is up to date")).length).toBe(2);
    const { rows } = await pool.query(`select count(*)::int as n from ${schema}.migrations`);
    expect(rows[0].n).toBe(Migration.list().length);
  });

  it("exits 1 with pg's message, not a stack, when the database cannot be reached or does not exist", async () => {
    const schema = freshSchema();
    const [refused, missingDb, notUrl] = await Promise.all([
      cli(["migrate", "--schema", schema, "--database-url", "postgres://postgres:secret@127.0.0.1:1/test"]),
      cli(["migrate", "--schema", schema], { DATABASE_URL: withDatabase(url, "gen_durable_no_such_db") }),
      cli(["migrate", "--schema", schema, "--database-url", "not a url"]),
    ]);
    const wrongScheme = await inProcess(["migrate", "--database-url", "mysql://root@127.0.0.1/test"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(/could not migrate schema cli_\w+ at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/test: connect ECONNREFUSED/);
    expect(refused.stderr).not.toContain("secret");
    expect(missingDb.code).toBe(1);
    expect(missingDb.stderr).toContain('database "gen_durable_no_such_db" does not exist');
    expect(notUrl.code).toBe(1);
    expect(notUrl.stderr).toContain('"not a url" is not a URL');
    expect(wrongScheme.code).toBe(1);
    expect(wrongScheme.stderr).toContain("is not a Postgres URL");
    for (const run of [refused, missingDb, notUrl, wrongScheme]) {
      expect(run.stdout).toBe("");
      noStack(run.stderr);
    }
    expect(await schemaExists(schema)).toBe(false);
  });

  it("exits 2 for a bad schema name or a missing database, and creates nothing", async () => {
    const [badSchema, noDb] = await Promise.all([cli(["migrate", "--schema", "Bad-Name"], { DATABASE_URL: url }), cli(["migrate"])]);
    expect(badSchema.code).toBe(2);
    expect(badSchema.stderr).toContain('invalid --schema: schema must match ^[a-z_][a-z0-9_]{0,40}$ and not start with pg_, got "Bad-Name"');
    expect(badSchema.stderr).toContain("usage: gen-durable migrate");
    expect(noDb.code).toBe(2);
    expect(noDb.stderr).toContain("no database: set DATABASE_URL or pass --database-url");
    for (const run of [badSchema, noDb]) {
      expect(run.stdout).toBe("");
      noStack(run.stderr);
    }
    expect(await schemaExists("Bad-Name")).toBe(false);
  });
});

/** The same command line parsing, in process (fast): every usage error is exit 2 with a pointer to help. */
describe("command line parsing", () => {
  it.each([
    [["migrate", "--schema", "pg_catalog"], "invalid --schema"],
    [["migrate", "--schema", "x".repeat(60)], "invalid --schema"],
    [["migrate", "--schema", "1abc"], "invalid --schema"],
    [["migrate", "--schema", "a;drop"], "invalid --schema"],
    [["migrate", "--schema="], "invalid --schema"],
    [["migrate", "--schem", "x"], 'unknown option --schem (did you mean "--schema"?)'],
    [["migrate", "--schema"], "option --schema needs a value"],
    [["migrate", "--database-url"], "option --database-url needs a value"],
    [["migrate", "now"], 'unexpected argument "now": migrate takes only options'],
    [["migrate", "--help=yes"], "--help"],
    [["migrat"], 'unknown command "migrat" (did you mean "migrate"?); commands are migrate, sql'],
    [["--schema", "x"], "unknown option --schema; a command comes first"],
    [["help", "nope"], 'unknown command "nope"'],
    [["sql", "--database-url", "postgres://x@y/z"], "unknown option --database-url"],
    [[], "usage: gen-durable <command> [options]"],
  ])("%j is a usage error", async (args, message) => {
    const result = await inProcess(args, { DATABASE_URL: "postgres://nobody@127.0.0.1:1/x" });
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toContain(message);
  });

  it("treats an empty DATABASE_URL as unset", async () => {
    const result = await inProcess(["migrate"], { DATABASE_URL: "  " });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("no database");
  });

  it("prints help for every command in the table", async () => {
    for (const command of COMMANDS) {
      for (const args of [[command.name, "--help"], [command.name, "-h"], ["help", command.name]]) {
        const result = await inProcess(args);
        expect(result.code).toBe(0);
        expect(result.stdout).toContain(`usage: gen-durable ${command.name}`);
        for (const option of Object.keys(command.options)) expect(result.stdout).toContain(`--${option}`);
      }
    }
  });
});

describe("gen-durable sql and help", () => {
  it("prints Migration.up() and Migration.down() for the schema without connecting", async () => {
    const [up, down] = await Promise.all([
      cli(["sql", "--schema", "my_jobs"], { DATABASE_URL: "postgres://nobody@127.0.0.1:1/x" }),
      cli(["sql", "--schema", "my_jobs", "--down"]),
    ]);
    const defaults = await inProcess(["sql"]);
    expect(defaults.code).toBe(0);
    expect(up.code).toBe(0);
    expect(up.stdout).toBe(Migration.up({ schema: "my_jobs" }) + "\n");
    expect(down.code).toBe(0);
    expect(down.stdout).toBe(Migration.down({ schema: "my_jobs" }) + "\n");
    expect(defaults.stdout).toBe(Migration.up() + "\n");
  });

  it("the printed SQL migrates a schema when run as is", async () => {
    const schema = freshSchema();
    const run = await cli(["sql", "--schema", schema]);
    await pool.query(run.stdout);
    const { rows } = await pool.query(`select count(*)::int as n from ${schema}.migrations`);
    expect(rows[0].n).toBe(Migration.list().length);
    const again = await cli(["migrate", "--schema", schema], { DATABASE_URL: url });
    expect(again.stdout).toContain("is up to date");
  });

  it("--help lists the commands; <command> --help shows its options", async () => {
    const [main, migrate, helpSql, version] = await Promise.all([cli(["--help"]), cli(["migrate", "--help"]), cli(["help", "sql"]), cli(["-v"])]);
    expect(main.code).toBe(0);
    expect(main.stdout).toMatch(/^usage: gen-durable <command>/);
    expect(main.stdout).toMatch(/^\s+migrate\s/m);
    expect(main.stdout).toMatch(/^\s+sql\s/m);
    expect(migrate.code).toBe(0);
    expect(migrate.stdout).toContain("usage: gen-durable migrate [--schema name] [--database-url url]");
    expect(migrate.stdout).toContain("DATABASE_URL");
    expect(helpSql.code).toBe(0);
    expect(helpSql.stdout).toContain("--down");
    expect(version.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });
});

function withDatabase(connection: string, database: string): string {
  const parsed = new URL(connection);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}
