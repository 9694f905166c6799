// The operator commands (status, list, show, signal, cancel, retry) against a
// real schema with real instances in every status. Most runs go through the
// command table in process (runCli with an injected Io), which is fast; a few
// run the real executable as a child process to check stdout, stderr and the
// exit code a shell script would see.
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { statusQueries } from "../../src/sql/status.js";
import { defineJob, defineMachine, migrate, type GenDurable, type Instance } from "../../src/index.js";
import { cliInProcess, spawnCli as spawnProcess, type Run } from "../support/cli.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const ENV = { DATABASE_URL: db.url };
// Nothing listens on port 1: a command that connects fails with exit 1, so exit 2 proves it did not try.
const UNREACHABLE = "postgres://postgres:secret@127.0.0.1:1/test";

/** `gen-durable ...args --schema <this file's schema>` in this process. */
function cli(args: string[], env: Record<string, string> = ENV, schema: string | null = db.schema): Promise<Run> {
  return cliInProcess(schema === null ? args : [...args, "--schema", schema], env);
}

/** The same as a child process, as a shell script would run it. */
const spawnCli = (args: string[], env: Record<string, string> = ENV): Promise<Run> =>
  spawnProcess([...args, "--schema", db.schema], env);

const noStack = (text: string) => expect(text).not.toMatch(/^\s+at /m);

/** Exit 1, nothing on stdout, one explanation on stderr. */
function expectFailure(run: Run, message: string | RegExp): void {
  expect(run.code, run.stderr).toBe(1);
  expect(run.stdout).toBe("");
  if (typeof message === "string") expect(run.stderr).toContain(message);
  else expect(run.stderr).toMatch(message);
  noStack(run.stderr);
}

/** Exit 2 with the command's usage line. */
function expectUsage(run: Run, message: string): void {
  expect(run.code, run.stderr).toBe(2);
  expect(run.stdout).toBe("");
  expect(run.stderr).toContain(message);
  expect(run.stderr).toContain("usage: gen-durable");
  noStack(run.stderr);
}

function json<T = Record<string, unknown>>(run: Run): T {
  expect(run.code, run.stderr).toBe(0);
  expect(run.stderr).toBe("");
  return JSON.parse(run.stdout) as T;
}

// ------------------------------------------------------------------ machines

/** Parks until "go", then finishes with its payload. */
const Waiter = defineMachine({
  name: "Waiter",
  queue: "ops",
  state: z.object({ n: z.number() }),
  steps: { start: (ctx) => ctx.await("go", "finish"), finish: (ctx) => ctx.done({ got: ctx.awaited[0]!.payload }) },
});

/** Fails at once: one attempt. */
const Boom = defineJob({
  name: "Boom",
  queue: "ops",
  args: z.object({}),
  maxAttempts: 1,
  perform: async () => {
    throw new Error("kaboom");
  },
});

/** Holds its step until the test releases it: a `running` row on demand. */
let release: () => void = () => {};
const gate = new Promise<void>((resolve) => (release = resolve));
const Busy = defineJob({ name: "Busy", queue: "ops", args: z.object({}), perform: () => gate.then(() => "released") });

/** Spawns a Waiter and joins it: a `joining` row. */
const Parent = defineMachine({
  name: "Parent",
  queue: "ops",
  state: z.object({}),
  steps: {
    start: (ctx) => ctx.spawn([{ machine: Waiter, state: { n: 0 } }], "join"),
    join: (ctx) => ctx.done(ctx.children.length),
  },
});

/** Finishes at once. */
const Quick = defineJob({ name: "Quick", queue: "ops", args: z.object({}), perform: () => "ok" });

let engine: GenDurable;
beforeAll(async () => {
  engine = db.engine({ queues: { ops: 4 }, machines: [Waiter, Boom, Busy, Parent, Quick] });
  await engine.start();
});
afterAll(() => release());

async function status(id: string): Promise<string | undefined> {
  return (await engine.get(id))?.status;
}

async function awaiting(correlationKey?: string): Promise<string> {
  const { id } = await engine.insert(Waiter, { state: { n: 1 }, ...(correlationKey ? { correlationKey } : {}) });
  await eventually(`instance ${id} awaiting`, async () => (await status(id)) === "awaiting");
  return id;
}

async function failed(): Promise<string> {
  const { id } = await engine.insert(Boom, { args: {} });
  await eventually(`instance ${id} failed`, async () => (await status(id)) === "failed");
  return id;
}

async function done(): Promise<string> {
  const { id } = await engine.insert(Quick, { args: {} });
  await engine.wait(id, { timeout: "30s" });
  return id;
}

const uniqueKey = (prefix: string) => `${prefix}:${randomBytes(4).toString("hex")}`;

// ------------------------------------------------------------------ status

describe("status", () => {
  it("counts every live status and failed per queue, with the oldest due age, paused queues and live nodes", async () => {
    // Queue "ops" is run by the engine: running, awaiting, joining, failed.
    const busy = await engine.insert(Busy, { args: {} });
    await eventually("Busy running", async () => (await status(busy.id)) === "running");
    await awaiting();
    const parent = await engine.insert(Parent, { state: {} });
    await eventually("Parent joining", async () => (await status(parent.id)) === "joining");
    await failed();
    // Queue "idle" is run by nobody: two due rows and one scheduled an hour ahead.
    const first = await engine.insert(Quick, { args: {}, queue: "idle" });
    await engine.insert(Quick, { args: {}, queue: "idle" });
    await engine.insert(Quick, { args: {}, queue: "idle", delay: "1h" });
    // Make the first one due for 90 s, so the oldest-due age is known to be at least that.
    await db.pool.query(`update ${db.schema}.instances set run_at = now() - interval '90 seconds' where id = $1`, [
      first.id,
    ]);
    await db.pool.query(`insert into ${db.schema}.queues (name, paused) values ('frozen', true), ('idle', true)`);
    await db.pool.query(
      `insert into ${db.schema}.nodes (id, machines, queues, started_at, heartbeat_at, lease_ms) values
         -- Alive with a heartbeat 40 s old (its lease is an hour), so the age it shows is known
         -- however long the commands below take.
         ('cli-alive', '{Quick}', '{idle,extra}', now() - interval '1 hour', now() - interval '40 seconds', 3600000),
         -- Gone (no heartbeat within its lease), but not yet forgotten by a reaper (ten leases: 5 minutes).
         ('cli-gone', '{Quick}', '{idle}', now() - interval '2 hours', now() - interval '2 minutes', 30000)`,
    );

    type Report = {
      schema: string;
      databaseTime: string;
      queues: Array<Record<string, unknown>>;
      nodes: { alive: number; total: number; list: Array<{ id: string; alive: boolean; queues: string[] }> };
    };
    // The Parent's child may still be on its way to awaiting: wait until ops has settled.
    const report = await eventually("ops settled", async () => {
      const r = json<Report>(await cli(["status", "--json"]));
      const ops = r.queues.find((q) => q.queue === "ops");
      return ops && ops.runnable === 0 && ops.awaiting === 2 ? r : null;
    });
    expect(report.schema).toBe(db.schema);
    expect(new Date(report.databaseTime).getTime()).toBeGreaterThan(0);
    const byName = Object.fromEntries(report.queues.map((q) => [q.queue, q]));
    expect(byName.ops).toMatchObject({
      paused: false,
      runnable: 0,
      scheduled: 0,
      running: 1,
      awaiting: 2,
      joining: 1,
      failed: 1,
      oldestDueMs: null,
    });
    expect(byName.idle).toMatchObject({
      paused: true,
      runnable: 2,
      scheduled: 1,
      running: 0,
      awaiting: 0,
      joining: 0,
      failed: 0,
    });
    expect(byName.idle!.oldestDueMs).toBeGreaterThanOrEqual(90_000);
    expect(byName.idle!.oldestDueMs).toBeLessThan(3_600_000);
    // An empty queue shows when it is paused or a live node serves it.
    expect(byName.frozen).toMatchObject({ paused: true, runnable: 0, running: 0 });
    expect(byName.extra).toMatchObject({ paused: false, runnable: 0 });
    const nodes = Object.fromEntries(report.nodes.list.map((n) => [n.id, n]));
    expect(nodes["cli-alive"]).toMatchObject({ alive: true, queues: ["idle", "extra"] });
    expect(nodes["cli-gone"]).toMatchObject({ alive: false });
    expect(report.nodes.total - report.nodes.alive).toBeGreaterThanOrEqual(1);

    const text = await cli(["status"]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stderr).toBe("");
    const lines = text.stdout.split("\n");
    const header = lines.find((l) => l.startsWith("QUEUE"))!;
    expect(header).toMatch(
      /^QUEUE\s+PAUSED\s+RUNNABLE\s+SCHEDULED\s+RUNNING\s+AWAITING\s+JOINING\s+FAILED\s+OLDEST DUE$/,
    );
    // Right-aligned counts: each number ends where its header ends.
    const ops = lines.find((l) => l.startsWith("ops "))!;
    expect(ops).toMatch(/^ops\s+no\s+0\s+0\s+1\s+2\s+1\s+1\s+-$/);
    expect(ops.indexOf(" 2 ") + 2).toBe(header.indexOf("AWAITING") + "AWAITING".length);
    expect(lines.find((l) => l.startsWith("idle "))).toMatch(/^idle\s+yes\s+2\s+1\s+0\s+0\s+0\s+0\s+1m \d+s$/);
    expect(text.stdout).toMatch(/nodes: \d+ alive, \d+ gone \(no heartbeat within their lease\)/);
    expect(text.stdout).toMatch(/^cli-alive\s+idle,extra\s+Quick\s+1h ago\s+4\ds ago$/m);
    expect(text.stdout).not.toContain("cli-gone");

    release();
    await engine.wait(busy.id, { timeout: "30s" });
  });

  it("reads each live status from its partial index, never the whole table", async () => {
    // With sequential scans priced out, a branch that has no usable index still
    // shows one: this fails if a query stops matching its index's predicate.
    const { branches } = statusQueries(db.schema);
    const client = await db.pool.connect();
    try {
      await client.query("begin");
      await client.query("set local enable_seqscan = off");
      const plan = async (sql: string) =>
        (await client.query(`explain ${sql}`)).rows.map((r: { "QUERY PLAN": string }) => r["QUERY PLAN"]).join("\n");
      const uses = (index: string) => new RegExp(`(Index (Only )?Scan using|Bitmap Index Scan on) ${index}\\b`);
      expect(await plan(branches.runnableUnkeyed)).toMatch(/Index Only Scan using instances_claim\b/);
      expect(await plan(branches.runnableKeyed)).toMatch(uses("instances_key_(runnable|due)"));
      expect(await plan(branches.running)).toMatch(uses("instances_lease"));
      expect(await plan(branches.awaiting)).toMatch(uses("instances_await_deadline"));
      expect(await plan(branches.failed)).toMatch(uses("instances_failed"));
      expect(await plan(branches.joining)).toMatch(uses("instances_joining"));
      // joining has no index yet (few rows; a partial index on (queue) where status = 'joining' would make it O(joining)).
    } finally {
      await client.query("rollback");
      client.release();
    }
  });
});

// ------------------------------------------------------------------ list

describe("list", () => {
  it("filters by machine, status list, queue and key, newest first, and pages with --after", async () => {
    const key = uniqueKey("list");
    const keyed = await awaiting(key);
    const a = await failed();
    const b = await failed();
    const c = await failed();

    const byKey = json<{ instances: Instance[]; nextAfter: string | null }>(
      await cli(["list", "--key", key, "--json"]),
    );
    expect(byKey.instances.map((i) => i.id)).toEqual([keyed]);
    expect(byKey.instances[0]).toMatchObject({
      machine: "Waiter",
      status: "awaiting",
      step: "finish",
      queue: "ops",
      correlationKey: key,
    });
    expect(byKey.nextAfter).toBeNull();

    const page1 = json<{ instances: Instance[]; nextAfter: string | null }>(
      await cli(["list", "--machine", "Boom", "--status", "failed", "--limit", "2", "--json"]),
    );
    expect(page1.instances.map((i) => i.id).slice(0, 2)).toEqual([c, b]);
    expect(page1.nextAfter).toBe(b);
    const page2 = json<{ instances: Instance[] }>(
      await cli(["list", "--machine", "Boom", "--limit", "2", "--after", page1.nextAfter!, "--json"]),
    );
    expect(page2.instances[0]!.id).toBe(a);

    const mixed = json<{ instances: Instance[] }>(
      await cli(["list", "--status", "awaiting,failed", "--queue", "ops", "--limit", "10000", "--json"]),
    );
    expect(new Set(mixed.instances.map((i) => i.status))).toEqual(new Set(["awaiting", "failed"]));
    expect(mixed.instances.map((i) => i.id)).toEqual(expect.arrayContaining([keyed, a, b, c]));
    expect(
      json<{ instances: Instance[] }>(await cli(["list", "--queue", "no-such-queue", "--json"])).instances,
    ).toEqual([]);

    const text = await cli(["list", "--machine", "Boom", "--limit", "2"]);
    expect(text.code).toBe(0);
    const lines = text.stdout.trimEnd().split("\n");
    expect(lines[0]).toMatch(/^\s*ID\s+MACHINE\s+STATUS\s+STEP\s+QUEUE\s+ATTEMPT\s+RUN AT\s+KEY\s+UPDATED$/);
    expect(lines[1]).toMatch(
      new RegExp(
        `^\\s*${c}\\s+Boom\\s+failed\\s+perform\\s+ops\\s+1\\s+\\d{4}-\\d\\d-\\d\\d \\d\\d:\\d\\d:\\d\\dZ\\s+-\\s+`,
      ),
    );
    expect(lines.at(-1)).toBe(`2 instances; next page: --after ${b}`);
    expect((await cli(["list", "--key", uniqueKey("none")])).stdout).toBe("no instances match\n");
  });

  it.each([
    [["list", "--status", "runable"], 'unknown status "runable" in --status (did you mean "runnable"?)'],
    [["list", "--status", "failed,"], 'unknown status "" in --status'],
    [["list", "--limit", "0"], '--limit must be an integer from 1 to 10000, got "0"'],
    [["list", "--limit", "10001"], "--limit must be an integer from 1 to 10000"],
    [["list", "--limit", "ten"], "--limit must be an integer"],
    [["list", "--after", "abc"], '--after must be a positive integer, got "abc"'],
    [["list", "--machin", "X"], 'unknown option --machin (did you mean "--machine"?)'],
    [["list", "extra"], 'unexpected argument "extra": list takes only options'],
  ])("%j is a usage error (exit 2) without connecting", async (args, message) => {
    expectUsage(await cli(args, { DATABASE_URL: UNREACHABLE }), message);
  });
});

// ------------------------------------------------------------------ show

describe("show", () => {
  it("shows an instance by id or key: fields, state, history and explain", async () => {
    const key = uniqueKey("show");
    const id = await awaiting(key);
    await engine.signal(key, "early-bird", 1);

    const byId = json<{
      instance: Instance;
      history: Array<{ outcome: string; fromStep: string }>;
      explanation: { reasons: string[]; status: string };
    }>(await cli(["show", id, "--json"]));
    expect(byId.instance).toMatchObject({
      id,
      machine: "Waiter",
      status: "awaiting",
      state: { n: 1 },
      correlationKey: key,
    });
    expect(byId.history.map((t) => t.outcome)).toEqual(["await"]);
    expect(byId.explanation.status).toBe("awaiting");
    expect(byId.explanation.reasons.join(" ")).toContain('awaiting signals: "go"');
    expect(json<{ instance: Instance }>(await cli(["show", key, "--json"])).instance.id).toBe(id);

    const text = await cli(["show", key]);
    expect(text.code, text.stderr).toBe(0);
    expect(text.stdout).toMatch(new RegExp(`^id:\\s+${id}$`, "m"));
    expect(text.stdout).toMatch(/^status:\s+awaiting$/m);
    expect(text.stdout).toMatch(new RegExp(`^correlation key:\\s+${key}$`, "m"));
    expect(text.stdout).toContain('state:\n  {\n    "n": 1\n  }');
    expect(text.stdout).toMatch(
      /^history \(1 transition, oldest first\):\n\s+AT\s+FROM\s+TO\s+OUTCOME\s+ATTEMPT\s+DURATION\s+ERROR\n\s+\S+ \S+\s+start\s+finish\s+await\s+1\s/m,
    );
    expect(text.stdout).toMatch(/^why it is not running:\n {2}- awaiting signals: "go"; arrived so far: none$/m);
  });

  it("shows a failed instance's error and its step", async () => {
    const id = await failed();
    const text = await cli(["show", id]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain("error:\n  Error: kaboom");
    expect(text.stdout).toMatch(/^status:\s+failed$/m);
    expect(text.stdout).toMatch(/- it is failed \(terminal\)/);
  });

  it("reads a number as an id unless --key says it is a key", async () => {
    const numericKey = String(9_000_000_000 + Math.floor(Math.random() * 1e6));
    const id = await awaiting(numericKey);
    expectFailure(
      await cli(["show", numericKey]),
      `gen-durable show: no instance ${numericKey} (to address the correlation key "${numericKey}", pass --key)`,
    );
    expect(json<{ instance: Instance }>(await cli(["show", numericKey, "--key", "--json"])).instance.id).toBe(id);
    expect(json<{ instance: Instance }>(await cli(["show", id, "--id", "--json"])).instance.id).toBe(id);
  });

  it("fails (exit 1) for an unknown id or key", async () => {
    expectFailure(await cli(["show", "987654321"]), "gen-durable show: no instance 987654321");
    expectFailure(
      await cli(["show", "no-such-key"]),
      'gen-durable show: no instance with correlation key "no-such-key"',
    );
  });

  it.each([
    [["show"], "missing argument <target>: instance id or correlation key"],
    [["show", "1", "2"], 'unexpected argument "2": show takes one argument'],
    [["show", "abc", "--id"], 'instance id must be a positive integer, got "abc"'],
    [["show", "1", "--id", "--key"], "--id and --key contradict each other"],
    [["show", ""], "the instance id or correlation key is empty"],
  ])("%j is a usage error (exit 2) without connecting", async (args, message) => {
    expectUsage(await cli(args, { DATABASE_URL: UNREACHABLE }), message);
  });
});

// ------------------------------------------------------------------ signal

describe("signal", () => {
  it("signals by key with a JSON payload, and the instance resumes with it", async () => {
    const key = uniqueKey("sig");
    const id = await awaiting(key);
    const run = await cli(["signal", key, "go", "--payload", '{"amount":100,"tags":["a"]}']);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stdout).toMatch(new RegExp(`^signal \\d+ \\(go\\) sent to instance ${id}\\n$`));
    expect((await engine.wait(id, { timeout: "30s" })).result).toEqual({ got: { amount: 100, tags: ["a"] } });
  });

  it("signals by id, stores a dedup key once, and reports the duplicate", async () => {
    const id = await awaiting();
    const first = json<{ signalId: string; instanceId: string; duplicate: boolean }>(
      await cli(["signal", id, "other", "--dedup-key", "hook-1", "--json"]),
    );
    expect(first).toMatchObject({ instanceId: id, duplicate: false });
    expect(first.signalId).toMatch(/^\d+$/);
    const second = await cli(["signal", id, "other", "--dedup-key", "hook-1"]);
    expect(second.code).toBe(0);
    expect(second.stdout).toBe(
      `duplicate: a signal with dedup key "hook-1" was already sent to instance ${id}; stored once\n`,
    );
    const { rows } = await db.pool.query(
      `select count(*)::int as n from ${db.schema}.signals where instance_id = $1 and event = 'other'`,
      [id],
    );
    expect(rows[0].n).toBe(1);
    // No payload: null. The instance resumes on "go".
    expect((await cli(["signal", id, "go", "--id"])).code).toBe(0);
    expect((await engine.wait(id, { timeout: "30s" })).result).toEqual({ got: null });
  });

  it("keeps a signal for a key with no instance with --keep, and hands it to the instance inserted later", async () => {
    const key = uniqueKey("keep");
    expectFailure(
      await cli(["signal", key, "go"]),
      `gen-durable signal: no instance "${key}" (pass --keep to hold the signal until an instance with this key is inserted)`,
    );
    const kept = await cli(["signal", key, "go", "--keep", "--payload", '"early"']);
    expect(kept.code, kept.stderr).toBe(0);
    expect(kept.stdout).toMatch(
      new RegExp(`^signal \\d+ kept for correlation key "${key}" until an instance with it is inserted\\n$`),
    );
    const { id } = await engine.insert(Waiter, { state: { n: 2 }, correlationKey: key });
    expect((await engine.wait(id, { timeout: "30s" })).result).toEqual({ got: "early" });
  });

  it("fails (exit 1) for an unknown id and a terminated instance", async () => {
    expectFailure(
      await cli(["signal", "987654321", "go"]),
      'gen-durable signal: no instance 987654321 (to address the correlation key "987654321", pass --key)',
    );
    const finished = await done();
    expectFailure(await cli(["signal", finished, "go"]), `gen-durable signal: instance ${finished} is already done`);
  });

  it.each([
    [["signal", "1", "go", "--payload", "{bad"], "--payload is not valid JSON ("],
    [["signal", "1", "go", "--payload", "undefined"], "--payload is not valid JSON"],
    [["signal", "1", "go", "--payload"], "option --payload needs a value"],
    [["signal", "1"], "missing argument <event>: the event name the instance awaits"],
    [["signal"], "missing argument <target>"],
    [["signal", "1", "go", "x"], 'unexpected argument "x": signal takes 2 arguments'],
    [["signal", "1", "go", "--keep"], "--keep applies to a correlation key, not an id"],
    [["signal", "k", "go", "--id"], 'instance id must be a positive integer, got "k"'],
    [["signal", "k", "go", "--dedup-ky", "x"], 'unknown option --dedup-ky (did you mean "--dedup-key"?)'],
  ])("%j is a usage error (exit 2) without connecting", async (args, message) => {
    expectUsage(await cli(args, { DATABASE_URL: UNREACHABLE }), message);
  });

  it("an event name the engine rejects is a usage error (exit 2), and nothing is stored", async () => {
    const id = await awaiting();
    expectUsage(await cli(["signal", id, " go"]), "signal: event must be a non-empty string");
    const { rows } = await db.pool.query(`select count(*)::int as n from ${db.schema}.signals where instance_id = $1`, [
      id,
    ]);
    expect(rows[0].n).toBe(0);
  });
});

// ------------------------------------------------------------------ cancel and retry

describe("cancel and retry", () => {
  it("cancels an instance with a reason, and cancelling it again succeeds", async () => {
    const id = await awaiting();
    const run = await cli(["cancel", id, "--reason", "customer left"]);
    expect(run).toEqual({ code: 0, stdout: `instance ${id} is cancelled\n`, stderr: "" });
    const instance = await engine.get(id);
    expect(instance).toMatchObject({ status: "cancelled", error: { message: "customer left" } });
    expect(json(await cli(["cancel", id, "--json"]))).toEqual({ id, status: "cancelled", reason: "cancelled" });
  });

  it("cancel fails (exit 1) for a done instance and an unknown id", async () => {
    const finished = await done();
    expectFailure(await cli(["cancel", finished]), `gen-durable cancel: instance ${finished} is already done`);
    expectFailure(await cli(["cancel", "987654321"]), "gen-durable cancel: no instance 987654321");
  });

  it("retries a failed instance: its step runs again with fresh attempts", async () => {
    const id = await failed();
    expect(json(await cli(["retry", id, "--json"]))).toEqual({ id, status: "runnable" });
    // Boom fails again; the history shows the retry and a second failure.
    await eventually("the retried attempt failed too", async () => {
      const outcomes = (await engine.history(id)).map((t) => t.outcome);
      return (
        outcomes.includes("retried") &&
        outcomes.lastIndexOf("failed") > outcomes.indexOf("retried") &&
        (await status(id)) === "failed"
      );
    });
    const text = await cli(["retry", id]);
    expect(text).toEqual({ code: 0, stdout: `instance ${id} is runnable again\n`, stderr: "" });
  });

  it("retry fails (exit 1) for an instance that is not failed, and an unknown id", async () => {
    const id = await awaiting();
    expectFailure(
      await cli(["retry", id]),
      `gen-durable retry: instance ${id} is awaiting; only failed instances can be retried`,
    );
    expectFailure(await cli(["retry", "987654321"]), "gen-durable retry: no instance 987654321");
  });

  it.each([
    [["cancel"], "pass an instance id, or a filter (--machine, --status, --queue, --older-than)"],
    [["cancel", "order:1"], 'instance id must be a positive integer, got "order:1"'],
    [["cancel", "1", "--reason"], "option --reason needs a value"],
    [["retry", "0"], 'instance id must be a positive integer, got "0"'],
    [["retry", "1", "2"], 'unexpected argument "2": retry takes one argument'],
  ])("%j is a usage error (exit 2) without connecting", async (args, message) => {
    expectUsage(await cli(args, { DATABASE_URL: UNREACHABLE }), message);
  });
});

// ------------------------------------------------------------------ connections

describe("database problems (exit 1, one clear line)", () => {
  const schemas: string[] = [];
  afterAll(async () => {
    for (const schema of schemas) await db.pool.query(`drop schema if exists ${schema} cascade`);
  });

  it.each(["status", "list"])("%s: nothing listening", async (command) => {
    const run = await cli([command], { DATABASE_URL: UNREACHABLE });
    expectFailure(
      run,
      /^gen-durable \w+: cannot connect to postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:1\/test: connect ECONNREFUSED .*\(nothing is listening there: is Postgres running, and are host and port right\?\)\n$/,
    );
    expect(run.stderr).not.toContain("secret");
  });

  it("authentication failure", async () => {
    const url = new URL(db.url);
    url.username = "gd_no_such_role";
    url.password = "wrong";
    const run = await cli(["status"], { DATABASE_URL: url.toString() });
    expectFailure(
      run,
      /cannot connect to .*: authentication failed: .*"gd_no_such_role".*\(check the user and password in the URL\)/,
    );
    expect(run.stderr).not.toContain("wrong");
  });

  it("a role without access to the schema: connected, but cannot read it", async () => {
    // Roles are global to the server: a unique name, dropped at the end.
    const role = `gd_cli_${randomBytes(4).toString("hex")}`;
    await db.pool.query(`create role ${role} login password 'pw'`);
    try {
      const url = new URL(db.url);
      url.username = role;
      url.password = "pw";
      expectFailure(
        await cli(["list"], { DATABASE_URL: url.toString() }),
        `gen-durable list: cannot read schema ${db.schema} at postgres://${role}:***@`,
      );
      expect((await cli(["list"], { DATABASE_URL: url.toString() })).stderr).toMatch(
        new RegExp(`: permission denied for schema ${db.schema}\n$`),
      );
    } finally {
      await db.pool.query(`drop role ${role}`);
    }
  });

  it("a database that does not exist, and URLs that are not Postgres URLs", async () => {
    const url = new URL(db.url);
    url.pathname = "/gd_no_such_database";
    expectFailure(
      await cli(["list"], { DATABASE_URL: url.toString() }),
      'database "gd_no_such_database" does not exist (check the database name in the URL)',
    );
    expectFailure(
      await cli(["status", "--database-url", "not a url"]),
      'gen-durable status: "not a url" is not a URL; expected postgres://user:password@host:5432/database',
    );
    expectFailure(
      await cli(["show", "1"], { DATABASE_URL: "mysql://root@127.0.0.1/x" }),
      "is not a Postgres URL (it starts with mysql:)",
    );
  });

  it("no database at all is a usage error (exit 2)", async () => {
    expectUsage(await cli(["status"], {}), "no database: set DATABASE_URL or pass --database-url");
  });

  it("an unmigrated or outdated schema says to run migrate", async () => {
    const fresh = `cli_ops_${randomBytes(4).toString("hex")}`;
    schemas.push(fresh);
    for (const args of [["status"], ["list"], ["show", "1"], ["signal", "k", "go"], ["cancel", "1"], ["retry", "1"]]) {
      expectFailure(
        await cli(args, ENV, fresh),
        `gen-durable ${args[0]}: schema ${fresh} is not migrated: run gen-durable migrate --schema ${fresh}\n`,
      );
    }
    // A schema at migration 1 of several: the newer tables are missing.
    const old = `cli_ops_${randomBytes(4).toString("hex")}`;
    schemas.push(old);
    await db.pool.query(
      `create schema ${old}; create table ${old}.migrations (id integer primary key, name text not null); insert into ${old}.migrations values (1, 'init')`,
    );
    expectFailure(
      await cli(["status"], ENV, old),
      new RegExp(
        `schema ${old} is at migration 1 but this gen-durable needs \\d+: run gen-durable migrate --schema ${old}`,
      ),
    );
    // The default schema's hint needs no --schema.
    const { rows } = await db.pool.query("select 1 from pg_namespace where nspname = 'gen_durable'");
    if (rows.length === 0)
      expectFailure(await cli(["status"], ENV, null), "schema gen_durable is not migrated: run gen-durable migrate\n");
  });

  it("a migrated schema with nothing in it", async () => {
    const empty = `cli_ops_${randomBytes(4).toString("hex")}`;
    schemas.push(empty);
    await migrate({ connectionString: db.url, schema: empty });
    const run = await cli(["status"], ENV, empty);
    expect(run.code).toBe(0);
    expect(run.stdout).toMatch(
      new RegExp(
        `^schema ${empty}, database time \\S+\\n\\nno queues: no live or failed instances\\n\\nnodes: 0 alive\\n\\ntables \\(autovacuum (on|OFF) on the server\\):\\nTABLE `,
      ),
    );
    // The busiest tables follow, each once.
    for (const table of ["concurrency_keys", "instances", "rate_limit_buckets", "signals", "transitions"])
      expect(run.stdout).toMatch(new RegExp(`^${table} `, "m"));
    expect(json(await cli(["list", "--json"], ENV, empty))).toEqual({ instances: [], nextAfter: null });
  });
});

// ------------------------------------------------------------------ the real executable

describe("gen-durable as a child process", { timeout: 180_000 }, () => {
  it("prints JSON a script can parse, and exit codes 0, 1 and 2", async () => {
    const key = uniqueKey("proc");
    const id = await awaiting(key);
    const [shown, statusRun, unknown, badJson, refused] = await Promise.all([
      spawnCli(["show", key, "--json"]),
      spawnCli(["status", "--json"]),
      spawnCli(["show", "987654321"]),
      spawnCli(["signal", key, "go", "--payload", "{nope"]),
      spawnCli(["list"], { DATABASE_URL: UNREACHABLE }),
    ]);
    expect(shown.code, shown.stderr).toBe(0);
    expect(JSON.parse(shown.stdout)).toMatchObject({
      instance: { id, status: "awaiting", correlationKey: key },
      history: [{ outcome: "await" }],
    });
    expect(statusRun.code, statusRun.stderr).toBe(0);
    expect(JSON.parse(statusRun.stdout).schema).toBe(db.schema);
    expect(unknown).toMatchObject({ code: 1, stdout: "" });
    expect(unknown.stderr).toContain("gen-durable show: no instance 987654321");
    expect(badJson).toMatchObject({ code: 2, stdout: "" });
    expect(badJson.stderr).toContain("--payload is not valid JSON");
    expect(refused).toMatchObject({ code: 1, stdout: "" });
    expect(refused.stderr).toContain("ECONNREFUSED");
    for (const run of [unknown, badJson, refused]) noStack(run.stderr);

    const signalled = await spawnCli(["signal", key, "go", "--payload", "42"]);
    expect(signalled.code, signalled.stderr).toBe(0);
    expect((await engine.wait(id, { timeout: "30s" })).result).toEqual({ got: 42 });
  });
});
