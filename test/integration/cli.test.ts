// The `gen-durable` command line. End-to-end paths run it as a real process
// (`node --import tsx src/cli/main.ts`, one process per run) against the test
// database, each in a fresh schema; the many command-line parsing paths run the
// same entry point in process, which is fast.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { COMMANDS } from "../../src/cli/commands/index.js";
import { Migration } from "../../src/index.js";
import { cliInProcess as inProcess, spawnCli as cli } from "../support/cli.js";
import { databaseUrl } from "../support/db.js";

const url = databaseUrl();
const pool = new pg.Pool({ connectionString: url, max: 2 });
const schemas: string[] = [];
const LAST = Migration.list().length;
// Spawning Node.js with TypeScript is slow on a busy 2-core machine.
const SPAWNING = { timeout: 180_000 };

function freshSchema(): string {
  const schema = `cli_${randomBytes(4).toString("hex")}`;
  schemas.push(schema);
  return schema;
}

afterAll(async () => {
  for (const schema of schemas) await pool.query(`drop schema if exists ${schema} cascade`);
  await pool.end();
});

async function schemaExists(schema: string): Promise<boolean> {
  const { rows } = await pool.query("select 1 from pg_namespace where nspname = $1", [schema]);
  return rows.length === 1;
}

async function appliedIds(schema: string): Promise<number[]> {
  const { rows } = await pool.query<{ id: number }>(`select id from ${schema}.migrations order by id`);
  return rows.map((r) => r.id);
}

const noStack = (text: string) => expect(text).not.toMatch(/^\s+at /m);
const applied = (schema: string) =>
  LAST === 1 ? `applied migration 1 to schema ${schema}\n` : `applied migrations 1..${LAST} to schema ${schema}\n`;

describe("gen-durable migrate (a real process)", SPAWNING, () => {
  it("migrates a fresh schema from DATABASE_URL, then finds it up to date", async () => {
    const schema = freshSchema();
    const first = await cli(["migrate", "--schema", schema], { DATABASE_URL: url });
    expect(first).toEqual({ code: 0, stdout: applied(schema), stderr: "" });
    expect(await appliedIds(schema)).toEqual(Migration.list().map((m) => m.id));
    await pool.query(`select count(*) from ${schema}.instances`);

    const second = await cli(["migrate", "--schema", schema], { DATABASE_URL: url });
    expect(second).toEqual({
      code: 0,
      stdout: `schema ${schema} is up to date (migration ${LAST} of ${LAST})\n`,
      stderr: "",
    });
  });

  it("takes --database-url over DATABASE_URL", async () => {
    const schema = freshSchema();
    const run = await cli(["migrate", `--schema=${schema}`, "--database-url", url], {
      DATABASE_URL: "postgres://nobody@127.0.0.1:1/nothing",
    });
    expect(run).toEqual({ code: 0, stdout: applied(schema), stderr: "" });
    expect(await schemaExists(schema)).toBe(true);
  });

  it("applies each migration once when three processes migrate at once", async () => {
    const schema = freshSchema();
    const runs = await Promise.all([1, 2, 3].map(() => cli(["migrate", "--schema", schema], { DATABASE_URL: url })));
    for (const run of runs) expect(run.code, run.stderr).toBe(0);
    expect(runs.filter((r) => r.stdout === applied(schema))).toHaveLength(1);
    expect(runs.filter((r) => r.stdout.includes("is up to date"))).toHaveLength(2);
    expect(await appliedIds(schema)).toEqual(Migration.list().map((m) => m.id));
  });

  it("exits 1 with pg's message, not a stack, when the server is unreachable or the database missing", async () => {
    const schema = freshSchema();
    const [refused, missingDb] = await Promise.all([
      cli(["migrate", "--schema", schema, "--database-url", "postgres://postgres:secret@127.0.0.1:1/test"]),
      cli(["migrate", "--schema", schema], { DATABASE_URL: withDatabase(url, "gen_durable_no_such_db") }),
    ]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /^gen-durable migrate: could not migrate schema cli_\w+ at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/test: connect ECONNREFUSED/,
    );
    expect(refused.stderr).not.toContain("secret");
    expect(missingDb.code).toBe(1);
    expect(missingDb.stderr).toContain('database "gen_durable_no_such_db" does not exist');
    for (const run of [refused, missingDb]) {
      expect(run.stdout).toBe("");
      noStack(run.stderr);
    }
    expect(await schemaExists(schema)).toBe(false);
  });

  it("exits 2 for a bad schema name, and creates nothing", async () => {
    const run = await cli(["migrate", "--schema", "Bad-Name"], { DATABASE_URL: url });
    expect(run.code).toBe(2);
    expect(run.stdout).toBe("");
    expect(run.stderr).toContain(
      'gen-durable: invalid --schema: schema must match ^[a-z_][a-z0-9_]{0,40}$ and not start with pg_, got "Bad-Name"',
    );
    expect(run.stderr).toContain("usage: gen-durable migrate");
    noStack(run.stderr);
    expect(await schemaExists("Bad-Name")).toBe(false);
  });

  it("sql prints Migration.up() for the schema, which migrates it when run as is", async () => {
    const schema = freshSchema();
    const up = await cli(["sql", "--schema", schema], { DATABASE_URL: "postgres://nobody@127.0.0.1:1/x" });
    expect(up).toEqual({ code: 0, stdout: Migration.up({ schema }) + "\n", stderr: "" });
    await pool.query(up.stdout);
    expect(await appliedIds(schema)).toEqual(Migration.list().map((m) => m.id));
    expect((await inProcess(["migrate", "--schema", schema], { DATABASE_URL: url })).stdout).toContain("is up to date");
  });

  it("--help lists the commands", async () => {
    const help = await cli(["--help"]);
    expect(help.code).toBe(0);
    expect(help.stdout).toMatch(/^usage: gen-durable <command>/);
    for (const command of COMMANDS) expect(help.stdout).toMatch(new RegExp(`^\\s+${command.name}\\s`, "m"));
  });
});

describe("gen-durable (in process)", () => {
  it("exits 1 for a database URL that is not a Postgres URL", async () => {
    const [notUrl, wrongScheme] = await Promise.all([
      inProcess(["migrate", "--database-url", "not a url"]),
      inProcess(["migrate"], { DATABASE_URL: "mysql://root@127.0.0.1/test" }),
    ]);
    expect(notUrl).toEqual({
      code: 1,
      stdout: "",
      stderr: 'gen-durable migrate: "not a url" is not a URL; expected postgres://user:password@host:5432/database\n',
    });
    expect(wrongScheme.code).toBe(1);
    expect(wrongScheme.stderr).toContain("is not a Postgres URL (it starts with mysql:)");
  });

  it("migrates with DATABASE_URL from the environment it is given", async () => {
    const schema = freshSchema();
    expect(await inProcess(["migrate", "--schema", schema], { DATABASE_URL: url })).toEqual({
      code: 0,
      stdout: applied(schema),
      stderr: "",
    });
  });

  it("sql --down prints Migration.down(); sql alone uses the default schema", async () => {
    expect(await inProcess(["sql", "--schema", "my_jobs", "--down"])).toEqual({
      code: 0,
      stdout: Migration.down({ schema: "my_jobs" }) + "\n",
      stderr: "",
    });
    expect((await inProcess(["sql"])).stdout).toBe(Migration.up() + "\n");
  });

  it.each([
    [["migrate"], "no database: set DATABASE_URL or pass --database-url"],
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
    [["sql", "--schema", "No"], "invalid --schema"],
    [[], "usage: gen-durable <command> [options]"],
  ])("%j is a usage error (exit 2)", async (args, message) => {
    const env: Record<string, string> =
      args[0] === "migrate" && args.length === 1 ? {} : { DATABASE_URL: "postgres://nobody@127.0.0.1:1/x" };
    const result = await inProcess(args, env);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toContain(message);
    noStack(result.stderr);
  });

  it("treats an empty DATABASE_URL as unset", async () => {
    const result = await inProcess(["migrate"], { DATABASE_URL: "  " });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("no database");
  });

  it("prints help for every command in the table, and the version", async () => {
    for (const command of COMMANDS) {
      for (const args of [
        [command.name, "--help"],
        [command.name, "-h"],
        ["help", command.name],
      ]) {
        const result = await inProcess(args);
        expect(result.code).toBe(0);
        expect(result.stdout).toContain(`usage: gen-durable ${command.name}`);
        for (const option of Object.keys(command.options)) expect(result.stdout).toContain(`--${option}`);
      }
    }
    expect((await inProcess(["migrate", "--help"])).stdout).toContain("DATABASE_URL");
    expect((await inProcess(["--version"])).stdout).toMatch(/^\d+\.\d+\.\d+/);
  });
});

function withDatabase(connection: string, database: string): string {
  const parsed = new URL(connection);
  parsed.pathname = `/${database}`;
  return parsed.toString();
}
