// The operator commands added for day-to-day work, against real Postgres: pause/resume, insert,
// bulk retry/cancel by filter (and --dry-run), show with signals, children, the parked step and
// --follow, cron, prune's progress, and error messages without a doubled prefix.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine, type GenDurable } from "../../src/index.js";
import { PROGRESS_EVERY } from "../../src/cli/commands/prune.js";
import { runCli } from "../../src/cli/cli.js";
import { COMMANDS } from "../../src/cli/commands/index.js";
import { cliInProcess, spawnCli, type Run } from "../support/cli.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const ENV = { DATABASE_URL: db.url };
const QUEUE = "operator";

const cli = (args: string[]): Promise<Run> => cliInProcess([...args, "--schema", db.schema], ENV);

function ok(run: Run): string {
  expect(run.code, run.stderr).toBe(0);
  return run.stdout;
}

function json<T = Record<string, unknown>>(run: Run): T {
  expect(run.code, run.stderr).toBe(0);
  return JSON.parse(run.stdout) as T;
}

let failNext = true;
/** Holds order 1 at its pick step (so it is live) until the twin insert has been refused. */
let releaseOrderOne!: () => void;
const orderOneHeld = new Promise<void>((resolve) => (releaseOrderOne = resolve));

const Order = defineMachine({
  name: "Order",
  queue: QUEUE,
  state: z.object({ order: z.number() }),
  steps: {
    start: (ctx) => ctx.await("paid", "pick", undefined, { timeout: "1h", onTimeout: "expire" }),
    pick: async (ctx) => {
      if (ctx.state.order === 1) await orderOneHeld;
      return ctx.spawn(
        [1, 2].map((item) => ({ machine: Item, args: { item } })),
        "join",
      );
    },
    join: (ctx) => ctx.done({ order: ctx.state.order, items: ctx.children.length }),
    expire: (ctx) => ctx.cancel("expired"),
  },
});

const Item = defineJob({
  name: "Item",
  queue: QUEUE,
  args: z.object({ item: z.number() }),
  perform: (args) => ({ picked: args.item }),
});

/** Fails its only attempt while failNext is set. */
const Flaky = defineJob({
  name: "Flaky",
  queue: QUEUE,
  maxAttempts: 1,
  args: z.object({ n: z.number() }),
  perform: (args) => {
    if (failNext) throw new Error(`flaky ${args.n} failed`);
    return { n: args.n };
  },
});

const Tick = defineJob({ name: "Tick", queue: QUEUE, args: z.object({}), perform: () => "tock" });

let engine: GenDurable;

beforeAll(async () => {
  engine = db.engine({
    queues: { [QUEUE]: 4 },
    machines: [Order, Item, Flaky, Tick],
    cron: [{ name: "every-minute", schedule: "* * * * *", machine: Tick, args: {} }],
  });
  await engine.start();
});

afterAll(async () => {
  await engine.stop();
});

describe("pause and resume", () => {
  it("pauses and resumes queues on every node, and lists the paused ones", async () => {
    const paused = ok(await cli(["pause", QUEUE, "other"]));
    expect(paused).toContain("paused: operator, other");
    expect(await engine.pausedQueues()).toEqual(expect.arrayContaining([QUEUE, "other"]));
    // Nothing runs in a paused queue.
    const { id } = await engine.insert(Item, { args: { item: 9 } });
    expect(json<{ pausedQueues: string[] }>(await cli(["resume", "other", "--json"])).pausedQueues).toEqual([QUEUE]);
    expect((await engine.get(id))?.status).toBe("runnable");
    ok(await cli(["resume", QUEUE]));
    expect((await engine.wait(id, { timeout: 20_000 })).result).toEqual({ picked: 9 });
    expect(await engine.pausedQueues()).toEqual([]);
  });

  it("needs a queue name, and refuses a bad one", async () => {
    const none = await cli(["pause"]);
    expect(none.code).toBe(2);
    expect(none.stderr).toContain("missing argument <queue>");
    const bad = await cli(["pause", " padded "]);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("gen-durable: pause: queue must be a non-empty string");
    expect(bad.stderr).not.toContain("pauseQueue");
  });
});

describe("insert", () => {
  it("inserts through the engine's statement: the instance runs, a live key returns its twin, kept signals arrive", async () => {
    await engine.signal("order:cli", "paid", { amount: 5 }, { ifMissing: "keep" });
    const first = json<{ id: string; inserted: boolean }>(
      await cli([
        "insert",
        "Order",
        "--state",
        '{"order": 1}',
        "--queue",
        QUEUE,
        "--correlation-key",
        "order:cli",
        "--json",
      ]),
    );
    expect(first.inserted).toBe(true);
    const twin = await cli([
      "insert",
      "Order",
      "--state",
      '{"order": 2}',
      "--queue",
      QUEUE,
      "--correlation-key",
      "order:cli",
    ]);
    expect(ok(twin)).toContain(`instance ${first.id} already holds correlation key "order:cli"`);
    releaseOrderOne();
    const done = await engine.wait(first.id, { timeout: 20_000 });
    expect(done.result).toEqual({ order: 1, items: 2 });
  });

  it("inserts a job with --args, delayed and prioritised", async () => {
    const out = ok(
      await cli(["insert", "Item", "--args", '{"item": 3}', "--queue", QUEUE, "--priority", "5", "--delay", "1h"]),
    );
    const id = /inserted instance (\d+) of Item \(step perform, queue operator\)/.exec(out)?.[1];
    expect(id).toBeDefined();
    const row = await engine.get(id!);
    expect(row).toMatchObject({ machine: "Item", step: "perform", priority: 5, status: "runnable" });
    expect(row!.runAt.getTime()).toBeGreaterThan(Date.now() + 50 * 60_000);
    await engine.cancel(id!);
  });

  it("a state the machine's schema refuses is refused by the node that claims it", async () => {
    const { id } = json<{ id: string }>(
      await cli(["insert", "Item", "--args", '{"item": "not a number"}', "--queue", QUEUE, "--json"]),
    );
    const failed = await engine.wait(id, { timeout: 20_000 });
    expect(failed.status).toBe("failed");
    expect(failed.error!.message).toMatch(/args of Item \(inserted from SQL\) is invalid: item: /);
  });

  it("a --concurrency-key takes the limit the machine's definition gives its keys", async () => {
    const Keyed = defineJob({
      name: "KeyedByCli",
      queue: "cli-idle",
      args: z.object({}),
      concurrency: { key: () => "unused", limit: 3 },
      perform: () => null,
    });
    const recorder = db.engine({ machines: [Keyed] }); // an engine that defines it records its limit
    await recorder.start();
    await recorder.stop();
    const limitOf = async (args: string[]) => {
      const { id } = json<{ id: string }>(
        await cli(["insert", "KeyedByCli", "--args", "{}", "--queue", "cli-idle", ...args, "--json"]),
      );
      const { rows } = await db.pool.query(`select concurrency_limit from "${db.schema}".instances where id = $1`, [
        id,
      ]);
      await engine.cancel(id);
      return rows[0].concurrency_limit as number | null;
    };
    expect(await limitOf(["--concurrency-key", "tenant:1"])).toBe(3);
    expect(await limitOf([])).toBeNull();
  });

  it("refuses bad input before connecting (exit 2)", async () => {
    for (const [args, message] of [
      [["insert", "Order"], "pass --state <json> (a machine) or --args <json> (a job)"],
      [["insert", "Order", "--state", "{order: 1}"], "--state must be JSON"],
      [["insert", "Order", "--state", "{}", "--args", "{}"], "pass --state or --args, not both"],
      [["insert", "Order", "--state", "{}", "--priority", "high"], "--priority must be an integer"],
      [["insert", "Order", "--state", "{}", "--run-at", "someday"], "--run-at must be a time"],
    ] as const) {
      const run = await cliInProcess([...args], { DATABASE_URL: "postgres://postgres@127.0.0.1:1/none" });
      expect(run.code, run.stderr).toBe(2);
      expect(run.stderr).toContain(message);
    }
  });
});

describe("bulk retry and cancel", () => {
  it("retries failed instances selected by machine, with a dry run first", async () => {
    failNext = true;
    const ids = (await engine.insertMany([1, 2, 3].map((n) => ({ machine: Flaky, args: { n } })))).map((r) => r.id);
    for (const id of ids) expect((await engine.wait(id, { timeout: 20_000 })).status).toBe("failed");

    const dry = ok(await cli(["retry", "--machine", "Flaky", "--dry-run"]));
    expect(dry).toContain("would retry 3 instances (status failed, machine Flaky)");
    for (const id of ids) expect((await engine.get(id))?.status).toBe("failed");

    failNext = false;
    const retried = json<{ retried: number; skipped: unknown[] }>(await cli(["retry", "--machine", "Flaky", "--json"]));
    expect(retried).toMatchObject({ retried: 3, skipped: [] });
    for (const [i, id] of ids.entries())
      expect((await engine.wait(id, { timeout: 20_000 })).result).toEqual({ n: i + 1 });
    expect(ok(await cli(["retry", "--machine", "Flaky", "--dry-run"]))).toContain("would retry 0 instances");
  });

  it("cancels live instances by status, queue and age; --older-than uses the database clock", async () => {
    const ids = (await engine.insertMany([10, 11].map((order) => ({ machine: Order, state: { order } })))).map(
      (r) => r.id,
    );
    await eventually("both parked", async () =>
      (await Promise.all(ids.map((id) => engine.get(id)))).every((i) => i?.status === "awaiting"),
    );
    expect(ok(await cli(["cancel", "--status", "awaiting", "--older-than", "1h", "--dry-run"]))).toContain(
      "would cancel 0 instances",
    );
    const out = ok(
      await cli(["cancel", "--status", "awaiting", "--queue", QUEUE, "--machine", "Order", "--reason", "bulk"]),
    );
    expect(out).toContain("cancelled 2 instances (status awaiting, machine Order, queue operator)");
    for (const id of ids) expect((await engine.get(id))?.error?.message).toBe("bulk");
  });

  it("walks a selection in id order across batches, where the ids gain a digit", async () => {
    // Batches of 500 after the last id: ordered as text, 10000-10499 came first and 9990-9999
    // (numerically smaller) were never reached.
    const { rows } = await db.pool.query<{ next: string }>(
      `select (10::numeric ^ length((coalesce(max(id), 0) + 20)::text))::bigint - 10 as next from ${db.schema}.instances`,
    );
    await db.pool.query(`alter table ${db.schema}.instances alter column id restart with ${rows[0]!.next}`);
    const ids = (
      await engine.insertMany(
        Array.from({ length: 600 }, (_, n) => ({ machine: Flaky, args: { n }, queue: "nowhere" })),
      )
    ).map((r) => r.id);
    expect(ids.filter((id) => id.length < ids[ids.length - 1]!.length)).toHaveLength(10);
    const out = ok(await cli(["cancel", "--status", "runnable", "--queue", "nowhere", "--reason", "bulk"]));
    expect(out).toContain("cancelled 600 instances");
    for (const id of [ids[0]!, ids[9]!, ids[599]!]) expect((await engine.get(id))?.status).toBe("cancelled");
  });

  it("refuses a status the command does not apply to, an id with a filter, and neither", async () => {
    const wrong = await cli(["retry", "--status", "done"]);
    expect(wrong.code).toBe(2);
    expect(wrong.stderr).toContain("retry applies to failed instances, not done");
    const both = await cli(["cancel", "7", "--machine", "Order"]);
    expect(both.code).toBe(2);
    expect(both.stderr).toContain("pass an instance id or a filter, not both");
    const neither = await cli(["cancel"]);
    expect(neither.code).toBe(2);
    expect(neither.stderr).toContain("pass an instance id, or a filter");
  });
});

describe("errors", () => {
  it("says the command once: no doubled prefix", async () => {
    const { id } = await engine.insert(Item, { args: { item: 1 } });
    await engine.wait(id, { timeout: 20_000 });
    const run = await cli(["retry", id]);
    expect(run.code).toBe(1);
    expect(run.stderr).toBe(`gen-durable retry: instance ${id} is done; only failed instances can be retried\n`);
  });
});

describe("show", () => {
  it("shows consumed signal payloads, children, and the parked step as from of the resume", async () => {
    const { id } = await engine.insert(Order, { state: { order: 20 } });
    await eventually("parked", async () => (await engine.get(id))?.status === "awaiting");
    await engine.signal({ id }, "paid", { amount: 42 });
    await engine.wait(id, { timeout: 20_000 });
    const out = ok(await cli(["show", id]));
    expect(out).toMatch(
      /signals \(1, oldest first\):\n +ID +EVENT +SENT +CONSUMED +PAYLOAD\n +\d+ +paid .*\{"amount":42\}/,
    );
    expect(out).toMatch(/children \(2, oldest first\):/);
    expect(out).toMatch(/\d+ +Item +done +perform +\{"picked":1\}/);
    // The await row parks at start; the resume row reads start -> pick, not pick -> pick.
    expect(out).toMatch(/ start +pick +await /);
    expect(out).toMatch(/ start +pick +resumed /);
    expect(out).not.toMatch(/ pick +pick +resumed /);
    const doc = json<{ signals: Array<{ payload: unknown }>; children: unknown[] }>(await cli(["show", id, "--json"]));
    expect(doc.signals.map((s) => s.payload)).toEqual([{ amount: 42 }]);
    expect(doc.children).toHaveLength(2);
  });

  it("--follow prints each new transition until the instance is terminal", async () => {
    // Paused, so nothing happens to the instance before --follow printed what it read.
    await engine.pauseQueue(QUEUE);
    const { id } = await engine.insert(Order, { state: { order: 21 } });
    let stdout = "";
    let following: () => void = () => {};
    const started = new Promise<void>((resolve) => (following = resolve));
    const done = runCli(["show", id, "--follow", "--schema", db.schema], COMMANDS, {
      out: (line) => {
        stdout += line + "\n";
        if (line.startsWith("following")) following();
      },
      err: (line) => (stdout += `stderr: ${line}\n`),
      env: ENV,
    });
    await started;
    await engine.resumeQueue(QUEUE);
    await eventually("parked", async () => (await engine.get(id))?.status === "awaiting");
    await engine.signal({ id }, "paid", { amount: 1 });
    expect(await done, stdout).toBe(0);
    const followed = stdout.slice(stdout.indexOf("following (Ctrl-C to stop):"));
    expect(followed).toMatch(/start -> pick +await /);
    expect(followed).toMatch(/start -> pick +resumed /);
    expect(followed).toMatch(/pick -> join +spawn /);
    expect(followed).toMatch(/join -> \S+ +done /);
    expect(stdout.trimEnd()).toMatch(new RegExp(`instance ${id} is done$`));
  });

  it("--follow of a terminal instance returns at once", async () => {
    const { id } = await engine.insert(Item, { args: { item: 5 } });
    await engine.wait(id, { timeout: 20_000 });
    const out = ok(await cli(["show", id, "--follow"]));
    expect(out.trimEnd()).toMatch(new RegExp(`instance ${id} is done$`));
  });
});

describe("cron", () => {
  it("lists each entry with its schedule, last tick and its instance, and next tick", async () => {
    const doc = await eventually("the entry recorded", async () => {
      const run = json<{ entries: Array<Record<string, unknown>> }>(await cli(["cron", "--json"]));
      return run.entries.length > 0 ? run : undefined;
    });
    const [entry] = doc.entries;
    expect(entry).toMatchObject({ name: "every-minute", schedule: "* * * * *", machine: "Tick", queue: QUEUE });
    const next = new Date(entry!.nextTick as string);
    expect(next.getUTCSeconds()).toBe(0);
    expect(next.getTime()).toBeGreaterThan(Date.now() - 5_000);
    const text = ok(await cli(["cron"]));
    expect(text).toMatch(/NAME +SCHEDULE +MACHINE +LAST TICK +LAST INSTANCE +NEXT TICK/);
    expect(text).toMatch(/every-minute +\* \* \* \* \* \(\S+\) +Tick /);
  });
});

describe("prune", () => {
  it("prints progress on stderr while a long prune runs", async () => {
    const n = PROGRESS_EVERY + 5;
    // Two days old: past --older-than 1d, but within the engine's own 7-day retention (its GC leaves them).
    await db.pool.query(
      `insert into ${db.schema}.instances (machine, step, state, status, queue, updated_at)
       select 'Bulk', 'start', '{}', 'done', 'bulk', now() - interval '2 days' from generate_series(1, $1)`,
      [n],
    );
    const run = await spawnCli(["prune", "--machine", "Bulk", "--older-than", "1d", "--schema", db.schema], ENV);
    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).toBe(
      `gen-durable prune: ${PROGRESS_EVERY} instances pruned so far (0 history rows, 0 signals); continuing\n`,
    );
    expect(run.stdout).toContain(`pruned ${n} instances`);
  });
});
