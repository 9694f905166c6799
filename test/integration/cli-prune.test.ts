// `gen-durable prune`: one real process end to end, the rest in process
// (same entry point, much faster), against this file's migrated schema.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob } from "../../src/index.js";
import { cliInProcess, spawnCli as cli } from "../support/cli.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = db.schema;

const inProcess = (args: string[], env: Record<string, string> = { DATABASE_URL: db.url }) => cliInProcess(args, env);

/** A terminal instance of `machine` finished `age` ago, with one history row and one signal. */
async function finished(machine: string, age: string, status = "done"): Promise<string> {
  const { rows } = await db.pool.query<{ id: string }>(
    `with i as (
       insert into ${s}.instances (machine, step, state, status, queue, updated_at)
       values ($1, 'start', '{}', $2, 'default', now() - $3::interval) returning id),
     t as (insert into ${s}.transitions (instance_id, outcome) select id, $2 from i),
     g as (insert into ${s}.signals (instance_id, event, consumed_at) select id, 'e', now() from i)
     select id::text as id from i`,
    [machine, status, age],
  );
  return rows[0]!.id;
}

async function exists(id: string): Promise<boolean> {
  return (await db.pool.query(`select 1 from ${s}.instances where id = $1`, [id])).rowCount === 1;
}

const noStack = (text: string) => expect(text).not.toMatch(/^\s+at /m);

describe("gen-durable prune", () => {
  it("prunes from DATABASE_URL as a real process, printing a human line", { timeout: 180_000 }, async () => {
    const old = [await finished("CliA", "3 days"), await finished("CliA", "2 days", "failed")];
    const young = await finished("CliA", "1 hour");
    const live = await finished("CliA", "30 days", "awaiting");
    const run = await cli(["prune", "--schema", s, "--older-than", "1d", "--machine", "CliA"], {
      DATABASE_URL: db.url,
    });
    expect(run).toEqual({
      code: 0,
      stdout: `pruned 2 instances, 2 history rows and 2 signals from schema ${s}\n`,
      stderr: "",
    });
    for (const id of old) expect(await exists(id)).toBe(false);
    expect(await exists(young)).toBe(true);
    expect(await exists(live)).toBe(true);
  });

  it("--json prints the counts; singular words for one", async () => {
    await finished("CliJson", "10 days");
    expect(await inProcess(["prune", "--schema", s, "--machine", "CliJson", "--json"])).toEqual({
      code: 0,
      stdout: JSON.stringify({ schema: s, instances: 1, transitions: 1, signals: 1 }) + "\n",
      stderr: "",
    });
    await finished("CliJson", "10 days");
    expect((await inProcess(["prune", "--schema", s, "--machine", "CliJson"])).stdout).toBe(
      `pruned 1 instance, 1 history row and 1 signal from schema ${s}\n`,
    );
    expect((await inProcess(["prune", "--schema", s, "--machine", "CliJson"])).stdout).toBe(
      `pruned 0 instances, 0 history rows and 0 signals from schema ${s}\n`,
    );
  });

  it("without --older-than: 7 days, or the machine's own retention recorded by its engines", async () => {
    const Keep = defineJob({ name: "CliKeep30", args: z.object({}), retention: "30d", perform: () => null });
    const Drop = defineJob({ name: "CliDrop1", args: z.object({}), retention: "1d", perform: () => null });
    await db.engine({ machines: [Keep, Drop] }).start();
    const keep = await finished("CliKeep30", "20 days");
    const drop = await finished("CliDrop1", "2 days");
    const plainOld = await finished("CliPlain", "8 days");
    const plainYoung = await finished("CliPlain", "6 days");
    const run = await inProcess(["prune", "--schema", s, "--json"]);
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).instances).toBeGreaterThanOrEqual(2);
    expect(await exists(keep)).toBe(true);
    expect(await exists(drop)).toBe(false);
    expect(await exists(plainOld)).toBe(false);
    expect(await exists(plainYoung)).toBe(true);
    // --older-than overrides them all.
    expect(
      (await inProcess(["prune", "--schema", s, "--machine", "CliKeep30", "--older-than", "19d"])).stdout,
    ).toContain("pruned 1 instance,");
    expect(await exists(keep)).toBe(false);
  });

  it("exits 1 with a clear message for an unmigrated schema, an unreachable server or a non-Postgres URL", async () => {
    const unmigrated = await inProcess(["prune", "--schema", "gd_never_migrated"]);
    expect(unmigrated.code).toBe(1);
    expect(unmigrated.stderr).toContain("gen-durable prune: could not prune schema gd_never_migrated at");
    expect(unmigrated.stderr).toContain('schema "gd_never_migrated" is not migrated: run `npx gen-durable migrate`');

    const refused = await inProcess(["prune", "--database-url", "postgres://postgres:secret@127.0.0.1:1/test"]);
    expect(refused.code).toBe(1);
    expect(refused.stderr).toMatch(
      /^gen-durable prune: could not prune schema gen_durable at postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/test: .*ECONNREFUSED/,
    );
    expect(refused.stderr).not.toContain("secret");

    const notPostgres = await inProcess(["prune"], { DATABASE_URL: "mysql://root@127.0.0.1/x" });
    expect(notPostgres.code).toBe(1);
    expect(notPostgres.stderr).toContain("is not a Postgres URL (it starts with mysql:)");
    for (const run of [unmigrated, refused, notPostgres]) {
      expect(run.stdout).toBe("");
      noStack(run.stderr);
    }
  });

  it.each([
    [
      ["prune", "--older-than", "soon"],
      'gen-durable: --older-than must be a duration (milliseconds >= 0 or a string like "30s", "5m", "2h"), got "soon"',
    ],
    [["prune", "--older-than=-1d"], "gen-durable: --older-than must be a duration"],
    [["prune", "--older-than"], "option --older-than needs a value"],
    [["prune", "--older-then", "1d"], 'unknown option --older-then (did you mean "--older-than"?)'],
    [["prune", "--machine", " Padded "], "gen-durable: --machine must be a non-empty string"],
    [["prune", "--machine="], "gen-durable: --machine must be a non-empty string"],
    [["prune", "--schema", "Bad-Name"], "invalid --schema"],
    [["prune", "everything"], 'unexpected argument "everything"'],
  ])("%j is a usage error (exit 2) and prunes nothing", async (args, message) => {
    const canary = await finished("CliCanary", "100 days");
    const result = await inProcess(args);
    expect(result.code).toBe(2);
    expect(result.stdout).toBe("");
    expect(result.stderr).toContain(message);
    expect(result.stderr).toContain("usage: gen-durable prune");
    noStack(result.stderr);
    expect(await exists(canary)).toBe(true);
  });

  it("needs a database: exit 2 without DATABASE_URL or --database-url", async () => {
    const result = await inProcess(["prune"], {});
    expect(result.code).toBe(2);
    expect(result.stderr).toContain("no database: set DATABASE_URL or pass --database-url");
  });

  it("--help describes every option", async () => {
    const help = await inProcess(["prune", "--help"], {});
    expect(help.code).toBe(0);
    for (const option of ["--older-than", "--machine", "--json", "--schema", "--database-url"])
      expect(help.stdout).toContain(option);
    expect((await inProcess(["--help"], {})).stdout).toMatch(/^\s+prune\s+delete terminal instances/m);
  });
});
