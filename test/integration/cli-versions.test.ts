// gen-durable check and move: stranded instances listed from a module's definitions, and repaired.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine } from "../../src/index.js";
import { cliInProcess } from "../support/cli.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const ENV = { DATABASE_URL: db.url };
const cli = (args: string[]) => cliInProcess([...args, "--schema", db.schema], ENV);
const MODULE = "test/integration/fixtures/renamed-machines.ts";

const Before = defineMachine({
  name: "CliRenamed",
  state: z.object({ n: z.number() }),
  steps: { start: (ctx) => ctx.await("go", "finish"), finish: (ctx) => ctx.done(ctx.state) },
});

describe("gen-durable check / move", () => {
  it("check exits 1 listing instances parked at missing steps; move repairs them; check exits 0", async () => {
    const engine = db.engine({ queues: { default: 1 }, machines: [Before] });
    await engine.start();
    const { id } = await engine.insert(Before, { state: { n: 1 } });
    await eventually("parked", async () => (await engine.get(id))?.status === "awaiting");
    await engine.stop();

    const before = await cli(["check", "--machines", MODULE]);
    expect(before.code, before.stderr).toBe(1);
    expect(before.stdout).toMatch(new RegExp(`${id}\\s+CliRenamed\\s+step "finish"\\s+awaiting`));
    const json = await cli(["check", "--machines", MODULE, "--json"]);
    expect(JSON.parse(json.stdout)).toEqual({
      ok: false,
      stranded: [{ id, machine: "CliRenamed", step: "finish", status: "awaiting" }],
    });

    const refused = await cli(["move", id, "--step", "nowhere", "--machines", MODULE]);
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('has no step "nowhere"');
    const moved = await cli(["move", id, "--step", "complete", "--state", '{"n":2}', "--machines", MODULE]);
    expect(moved.code, moved.stderr).toBe(0);
    expect(moved.stdout).toContain(`instance ${id} moved to step "complete"`);

    const after = await cli(["check", "--machines", MODULE]);
    expect(after.code, after.stderr).toBe(0);
    const pool = db.pool;
    const { rows } = await pool.query(`select step, state, status from ${db.schema}.instances where id = $1`, [id]);
    expect(rows[0]).toEqual({ step: "complete", state: { n: 2 }, status: "runnable" });
    const { rows: history } = await pool.query(
      `select from_step, to_step, outcome from ${db.schema}.transitions where instance_id = $1 order by id desc limit 1`,
      [id],
    );
    expect(history[0]).toEqual({ from_step: "finish", to_step: "complete", outcome: "moved" });
  });

  it("graph --machines prints the static graph of a machine the module exports", async () => {
    const run = await cliInProcess(["graph", "CliRenamed", "--machines", MODULE], {});
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toContain("stateDiagram-v2\n  [*] --> start");
    const json = await cliInProcess(["graph", "CliRenamed", "--machines", MODULE, "--json"], {});
    expect(JSON.parse(json.stdout)).toMatchObject({ machine: "CliRenamed", initial: "start" });
    const missing = await cliInProcess(["graph", "Nope", "--machines", MODULE], {});
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain("exports no machine Nope");
  });

  it("check needs --machines", async () => {
    const run = await cli(["check"]);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("check needs --machines <module>");
  });
});
