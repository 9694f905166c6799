// Every public entry point refuses bad input before it reaches Postgres: a ValidationError
// (calls) or a ConfigError (construction and definitions) whose message names the bad
// option, never a raw DatabaseError, and nothing written. Then what is stored instead of
// refused: JSON null states, and cancel reasons bounded and cleaned like error messages.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { runCli } from "../../src/cli/cli.js";
import { COMMANDS } from "../../src/cli/commands/index.js";
import { toErrorRecord } from "../../src/json.js";
import {
  ConfigError,
  defineJob,
  defineMachine,
  GenDurable,
  ValidationError,
  type GenDurableOptions,
} from "../../src/index.js";
import type { StandardSchemaV1 } from "../../src/schema.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const S = `"${db.schema}"`;

const Parked = defineMachine({
  name: "Parked",
  queue: "idle",
  state: z.object({ order: z.number() }),
  steps: { start: (ctx) => ctx.done() },
});
const MaybeArgs = defineJob({
  name: "MaybeArgs",
  queue: "idle",
  args: z.object({ n: z.number() }).optional(),
  perform: async () => null,
});
const NullArgs = defineJob({
  name: "NullArgs",
  queue: "nulls",
  args: z.null(),
  perform: async (args) => ({ got: args }),
});

const client = db.engine({ rateLimits: { ten: { limit: 10, period: "1s" } } });
await client.start();
const { id: live } = await client.insert(Parked, { state: { order: 1 } });
const { id: ended } = await client.insert(Parked, { state: { order: 2 } });
await client.cancel(ended);

/** One more than the largest bigint: an id Postgres cannot even compare. */
const OVER = "9223372036854775808";
/** Just over the duration cap of 100 years (36,500 days). */
const CENTURY_AND_A_DAY = "36501d";

/** Row counts of every table a call could write, and the live instance as stored. */
async function snapshot(): Promise<unknown> {
  const tables = [
    "instances",
    "transitions",
    "signals",
    "cron_ticks",
    "rate_limit_buckets",
    "queues",
    "concurrency_keys",
    "nodes",
  ];
  const counts = tables.map((t) => `(select count(*)::int from ${S}.${t}) as ${t}`).join(", ");
  const { rows } = await db.pool.query(
    `select ${counts}, (select row_to_json(i)::text from ${S}.instances i where id = $1) as live`,
    [live],
  );
  return rows[0];
}

const V = ValidationError;
const C = ConfigError;
type Case = [label: string, call: () => unknown, kind: typeof ValidationError | typeof ConfigError, message: RegExp];

const engine = (options: Partial<GenDurableOptions>) => () =>
  new GenDurable({ connectionString: db.url, schema: db.schema, ...options });
const job = (extra: object) => () => defineJob({ name: "J", args: z.object({}), perform: async () => null, ...extra });
const machine =
  (steps: Record<string, unknown>, name = "M") =>
  () =>
    defineMachine({ name, state: z.object({}), steps: steps as never });
const step = () => ({ done: true });

const NOT_ID = /must be an instance id: a positive integer string up to 9223372036854775807/;
const CENTURY = /must be at most 100 years \(3153600000000 ms\)/;
const RUN_AT = /runAt must be a valid Date from 0001-01-01 to 9999-12-31 \(UTC\)/;

const cases: Case[] = [
  // insert, insertMany: durations and dates Postgres cannot add or store
  [
    "insert: delay over 100 years",
    () => client.insert(Parked, { state: { order: 1 }, delay: CENTURY_AND_A_DAY }),
    V,
    /^insert: delay must be at most 100 years \(3153600000000 ms\), got 3153686400000 ms$/,
  ],
  [
    "insert: delay 1e300 ms",
    () => client.insert(Parked, { state: { order: 1 }, delay: 1e300 }),
    V,
    /insert: delay must be at most 100 years/,
  ],
  [
    "insert: delay of 20 digits",
    () => client.insert(Parked, { state: { order: 1 }, delay: "99999999999999999999d" }),
    V,
    /insert: delay must be at most 100 years/,
  ],
  [
    "insert: runAt in year 10000",
    () => client.insert(Parked, { state: { order: 1 }, runAt: new Date("+010000-01-01T00:00:00Z") }),
    V,
    RUN_AT,
  ],
  [
    "insert: runAt at the end of JavaScript time",
    () => client.insert(Parked, { state: { order: 1 }, runAt: new Date(8.64e15) }),
    V,
    /insert: runAt must be .*got \+275760-09-13T00:00:00\.000Z/,
  ],
  [
    "insert: runAt before year 1",
    () => client.insert(Parked, { state: { order: 1 }, runAt: new Date("-000001-06-01T00:00:00Z") }),
    V,
    RUN_AT,
  ],
  [
    "insert: runAt an invalid Date",
    () => client.insert(Parked, { state: { order: 1 }, runAt: new Date(Number.NaN) }),
    V,
    /insert: runAt must be a valid Date .*got Invalid Date/,
  ],
  // keys and names Postgres would reject (NUL) or silently change (a lone surrogate becomes U+FFFD)
  [
    "insert: correlationKey with a lone surrogate",
    () => client.insert(Parked, { state: { order: 1 }, correlationKey: "order:\ud800" }),
    V,
    /insert: correlationKey must be .*without NUL or lone UTF-16 surrogates/,
  ],
  [
    "insert: concurrencyKey with a lone low surrogate",
    () => client.insert(Parked, { state: { order: 1 }, concurrencyKey: "\udc00x" }),
    V,
    /insert: concurrencyKey must be/,
  ],
  [
    "insert: queue with a lone surrogate",
    () => client.insert(Parked, { state: { order: 1 }, queue: "q\ud83d" }),
    V,
    /insert: queue must be .*lone UTF-16 surrogates/,
  ],
  [
    "insert: args undefined, which the schema accepts",
    () => client.insert(MaybeArgs, { args: undefined }),
    V,
    /args of MaybeArgs is undefined, which cannot be stored/,
  ],
  [
    "insertMany: one bad delay refuses the batch",
    () =>
      client.insertMany([
        { machine: Parked, state: { order: 1 } },
        { machine: Parked, state: { order: 2 }, delay: 1e300 },
      ]),
    V,
    /^insertMany\[1\]: delay must be at most 100 years/,
  ],
  [
    "insertMany: one bad runAt refuses the batch",
    () =>
      client.insertMany([
        { machine: Parked, state: { order: 1 } },
        { machine: Parked, state: { order: 2 }, runAt: new Date(8.64e15) },
      ]),
    V,
    /^insertMany\[1\]: runAt must be/,
  ],
  [
    "insertMany: an item that is not an object",
    () => client.insertMany([null as never]),
    V,
    /^insertMany\[0\]: .*must be .*\{ machine/,
  ],
  [
    "insertMany: args undefined",
    () => client.insertMany([{ machine: MaybeArgs, args: undefined }]),
    V,
    /args of MaybeArgs is undefined, which cannot be stored/,
  ],
  // ids: one checker, everywhere an id is taken
  ["get: an id over the bigint maximum", () => client.get(OVER), V, /^get: id must be an instance id/],
  ["get: id 0", () => client.get("0"), V, NOT_ID],
  ["get: a negative id", () => client.get("-1"), V, NOT_ID],
  ["get: a fraction", () => client.get("1.5"), V, NOT_ID],
  ["get: a word", () => client.get("not-an-id"), V, NOT_ID],
  ["get: a padded id", () => client.get(" 12"), V, NOT_ID],
  ["get: a leading zero", () => client.get("012"), V, NOT_ID],
  ["get: 20 digits", () => client.get("12345678901234567890"), V, NOT_ID],
  ["get: correlationKey with NUL", () => client.get({ correlationKey: "a\u0000" }), V, /^get: correlationKey must be/],
  [
    "get: correlationKey with a lone surrogate",
    () => client.get({ correlationKey: "\ud800" }),
    V,
    /^get: correlationKey must be/,
  ],
  ["explain: an id over the bigint maximum", () => client.explain(OVER), V, /^explain: id must be an instance id/],
  ["history: an id over the bigint maximum", () => client.history(OVER), V, /^history: id must be an instance id/],
  ["wait: an id over the bigint maximum", () => client.wait(OVER), V, /^wait: id must be an instance id/],
  [
    "wait: a timeout over 100 years",
    () => client.wait(ended, { timeout: CENTURY_AND_A_DAY }),
    V,
    /^wait: timeout must be at most 100 years/,
  ],
  ["cancel: an id over the bigint maximum", () => client.cancel(OVER), V, /^cancel: id must be an instance id/],
  ["cancel: a word for an id", () => client.cancel("abc"), V, /^cancel: id must be an instance id/],
  [
    "cancel: a reason that is not a string",
    () => client.cancel(live, 42 as never),
    V,
    /^cancel: reason must be a string, got 42/,
  ],
  ["retry: an id over the bigint maximum", () => client.retry(OVER), V, /^retry: id must be an instance id/],
  [
    "signal: an id over the bigint maximum",
    () => client.signal({ id: OVER }, "go"),
    V,
    /^signal: id must be an instance id/,
  ],
  [
    "signal: an id that is not a number",
    () => client.signal({ id: "nonsense" }, "go"),
    V,
    /^signal: id must be an instance id/,
  ],
  [
    "signal: a key with a lone surrogate",
    () => client.signal("key:\ud800", "go"),
    V,
    /^signal: the target correlation key must be/,
  ],
  [
    "signal: an event with a lone surrogate",
    () => client.signal({ id: live }, "go\udfff"),
    V,
    /^signal: event must be/,
  ],
  [
    "signal: a dedupKey with a lone surrogate",
    () => client.signal({ id: live }, "go", null, { dedupKey: "\ud800" }),
    V,
    /^signal: dedupKey must be/,
  ],
  [
    "move: an id over the bigint maximum",
    () => client.move(OVER, { step: "start" }),
    V,
    /^move: id must be an instance id/,
  ],
  ["move: a step with NUL", () => client.move(live, { step: "a\u0000" }), V, /step/],
  ["move: a step with a lone surrogate", () => client.move(live, { step: "\ud800" }), V, /step/],
  [
    "waitForEvent: an id over the bigint maximum",
    () => client.waitForEvent(OVER, "ready"),
    V,
    /^waitForEvent: id must be an instance id/,
  ],
  [
    "waitForEvent: a key with a lone surrogate",
    () => client.waitForEvent(live, "ready\ud800"),
    V,
    /^waitForEvent: event key must be/,
  ],
  [
    "waitForEvent: a correlationKey with NUL",
    () => client.waitForEvent({ correlationKey: "a\u0000" }, "ready"),
    V,
    /^waitForEvent: correlationKey must be/,
  ],
  // list filters
  [
    "list: an unknown status",
    () => client.list({ status: "bogus" as never }),
    V,
    /^list: status must be one of runnable, running, awaiting, joining, done, failed, cancelled; got "bogus"/,
  ],
  [
    "list: an unknown status in a list",
    () => client.list({ status: ["done", "faild" as never] }),
    V,
    /list: status .*got "faild" \(did you mean "failed"\?\)/,
  ],
  ["list: a machine with NUL", () => client.list({ machine: "a\u0000" }), V, /^list: machine must be/],
  ["list: a machine that is not a string", () => client.list({ machine: 42 as never }), V, /^list: machine must be/],
  ["list: a queue with a lone surrogate", () => client.list({ queue: "\ud800" }), V, /^list: queue must be/],
  [
    "list: a correlationKey with a lone surrogate",
    () => client.list({ correlationKey: "\ud800" }),
    V,
    /^list: correlationKey must be/,
  ],
  [
    "list: after an id over the bigint maximum",
    () => client.list({ after: OVER }),
    V,
    /^list: after must be an instance id/,
  ],
  ["list: a fractional limit", () => client.list({ limit: 1.5 }), V, /^list: limit must be an integer/],
  // rate limits at run time
  [
    "consume: a fractional weight",
    () => client.consume("ten", { weight: 1.5 }),
    V,
    /^consume\("ten"\): weight must be a whole number of tokens from 1 to 10 \(the limit's burst\), got 1.5/,
  ],
  [
    "consume: weight 0",
    () => client.consume("ten", { weight: 0 }),
    V,
    /consume\("ten"\): weight must be a whole number/,
  ],
  [
    "consume: a negative weight",
    () => client.consume("ten", { weight: -1 }),
    V,
    /consume\("ten"\): weight must be a whole number/,
  ],
  [
    "consume: a weight over the burst (never available)",
    () => client.consume("ten", { weight: 11 }),
    V,
    /consume\("ten"\): weight must be .*got 11/,
  ],
  [
    "consume: a weight over the int range",
    () => client.consume("ten", { weight: 2 ** 31 }),
    V,
    /consume\("ten"\): weight must be/,
  ],
  ["consume: a NaN weight", () => client.consume("ten", { weight: Number.NaN }), V, /consume\("ten"\): weight must be/],
  [
    "consume: a partition with NUL",
    () => client.consume("ten", { partition: "p\u0000" }),
    V,
    /^consume\("ten"\): partition must be/,
  ],
  [
    "consume: a partition with a lone surrogate",
    () => client.consume("ten", { partition: "\ud800" }),
    V,
    /^consume\("ten"\): partition must be/,
  ],
  ["pauseQueue: a queue with a lone surrogate", () => client.pauseQueue("q\ud800"), V, /^pauseQueue: queue must be/],
  ["resumeQueue: a queue with a lone surrogate", () => client.resumeQueue("q\udc00"), V, /^resumeQueue: queue must be/],
  [
    "prune: olderThan over 100 years",
    () => client.prune({ olderThan: CENTURY_AND_A_DAY }),
    V,
    /^prune: olderThan must be at most 100 years/,
  ],
  ["prune: a machine with a lone surrogate", () => client.prune({ machine: "\ud800" }), V, /^prune: machine must be/],
  // engine options
  [
    "GenDurable: pollInterval over 100 years",
    engine({ pollInterval: CENTURY_AND_A_DAY }),
    C,
    /^GenDurable: pollInterval must be at most 100 years/,
  ],
  [
    "GenDurable: signalRetention over 100 years",
    engine({ signalRetention: 1e300 }),
    C,
    /^GenDurable: signalRetention must be at most 100 years/,
  ],
  ["GenDurable: shutdownGrace over 100 years", engine({ shutdownGrace: CENTURY_AND_A_DAY }), C, CENTURY],
  [
    "GenDurable: leaseDuration over a day",
    engine({ leaseDuration: "100d" }),
    C,
    /^GenDurable: leaseDuration must be at most 1 day \(86400000 ms\), got 8640000000 ms/,
  ],
  [
    "GenDurable: listenerHeartbeat over a day",
    engine({ listenerHeartbeat: "2d" }),
    C,
    /^GenDurable: listenerHeartbeat must be at most 1 day/,
  ],
  [
    "GenDurable: queueDepthInterval over 100 years",
    engine({ telemetry: { queueDepthInterval: CENTURY_AND_A_DAY } }),
    C,
    /telemetry\.queueDepthInterval must be at most 100 years/,
  ],
  [
    "GenDurable: a queue name with a lone surrogate",
    engine({ queues: { "q\ud800": 1 } }),
    C,
    /queues: queue name must be/,
  ],
  ["GenDurable: a nodeId with a lone surrogate", engine({ nodeId: "node\ud800" }), C, /nodeId must be/],
  [
    "GenDurable: rate limit with a fractional limit",
    engine({ rateLimits: { x: { limit: 1.5, period: "1s" } } }),
    C,
    /^GenDurable: rateLimits\.x\.limit must be a whole number of tokens per period from 1 to 2147483647, got 1.5/,
  ],
  [
    "GenDurable: rate limit with limit 0",
    engine({ rateLimits: { x: { limit: 0, period: "1s" } } }),
    C,
    /rateLimits\.x\.limit must be a whole number/,
  ],
  [
    "GenDurable: rate limit with a negative limit",
    engine({ rateLimits: { x: { limit: -1, period: "1s" } } }),
    C,
    /rateLimits\.x\.limit must be a whole number/,
  ],
  [
    "GenDurable: rate limit over the int range",
    engine({ rateLimits: { x: { limit: 2 ** 31, period: "1s" } } }),
    C,
    /rateLimits\.x\.limit must be a whole number/,
  ],
  [
    "GenDurable: rate limit with a fractional burst",
    engine({ rateLimits: { x: { limit: 1, period: "1s", burst: 0.5 } } }),
    C,
    /rateLimits\.x\.burst must be a whole number of tokens from 1 to 2147483647, got 0.5/,
  ],
  [
    "GenDurable: rate limit with a burst over the int range",
    engine({ rateLimits: { x: { limit: 1, period: "1s", burst: 2 ** 31 } } }),
    C,
    /rateLimits\.x\.burst must be a whole number/,
  ],
  [
    "GenDurable: rate limit with period 0",
    engine({ rateLimits: { x: { limit: 1, period: 0 } } }),
    C,
    /rateLimits\.x\.period must be longer than 0 ms/,
  ],
  [
    "GenDurable: rate limit with a period over 100 years",
    engine({ rateLimits: { x: { limit: 1, period: CENTURY_AND_A_DAY } } }),
    C,
    /rateLimits\.x\.period must be at most 100 years/,
  ],
  [
    "GenDurable: rate limit whose bucket takes over 100 years to fill",
    engine({ rateLimits: { x: { limit: 1, burst: 2, period: "36500d" } } }),
    C,
    /rateLimits\.x: an empty bucket must refill within 100 years \(burst \/ limit × period\), got 6307200000000 ms/,
  ],
  [
    "GenDurable: a step drawing more than its limit's burst",
    engine({
      rateLimits: { ten: { limit: 10, period: "1s" } },
      machines: [
        defineJob({
          name: "Heavy",
          args: z.object({}),
          rateLimit: { name: "ten", weight: 11 },
          perform: async () => null,
        }),
      ],
    }),
    C,
    /machine "Heavy" step "perform" draws 11 tokens from rate limit "ten", more than its burst of 10/,
  ],
  [
    "GenDurable: a cron entry without args for args that may be undefined",
    engine({ machines: [MaybeArgs], cron: [{ name: "c", schedule: "* * * * *", machine: MaybeArgs }] }),
    C,
    /cron entry "c": args of MaybeArgs is undefined, which cannot be stored/,
  ],
  [
    "GenDurable: a cron name with a lone surrogate",
    engine({
      machines: [Parked],
      cron: [{ name: "c\ud800", schedule: "* * * * *", machine: Parked, state: { order: 1 } }],
    }),
    C,
    /cron\[0\]\.name must be/,
  ],
  // definitions
  [
    "defineJob: a step timeout over 100 years",
    job({ timeout: CENTURY_AND_A_DAY }),
    C,
    /^defineJob\("J"\)\.perform\.timeout must be at most 100 years/,
  ],
  [
    "defineJob: a backoff delay over 100 years",
    job({ backoff: { type: "fixed", delay: CENTURY_AND_A_DAY } }),
    C,
    /backoff\.delay must be at most 100 years/,
  ],
  [
    "defineJob: a fractional rate-limit weight",
    job({ rateLimit: { name: "ten", weight: 1.5 } }),
    C,
    /^defineJob\("J"\)\.perform\.rateLimit\.weight must be a whole number of tokens from 1 to 2147483647 or a function \(ctx\) => number, got 1.5/,
  ],
  [
    "defineJob: a rate-limit weight over the int range",
    job({ rateLimit: { name: "ten", weight: 2 ** 31 } }),
    C,
    /rateLimit\.weight must be a whole number/,
  ],
  [
    "defineMachine: a step name with a lone surrogate",
    machine({ start: step, "next\ud800": step }),
    C,
    /^defineMachine\("M"\): step name must be .*lone UTF-16 surrogates/,
  ],
  [
    "defineMachine: a step name with NUL",
    machine({ start: step, "a\u0000b": step }),
    C,
    /^defineMachine\("M"\): step name must be/,
  ],
  [
    "defineMachine: an empty step name",
    machine({ start: step, "": step }),
    C,
    /^defineMachine\("M"\): step name must be/,
  ],
  [
    "defineMachine: a step name with surrounding spaces",
    machine({ start: step, " padded ": step }),
    C,
    /^defineMachine\("M"\): step name must be/,
  ],
  [
    "defineMachine: a name with a lone surrogate",
    machine({ start: step }, "M\ud800"),
    C,
    /name must be .*lone UTF-16 surrogates/,
  ],
];

describe("bad input is refused before it reaches Postgres, naming the option, writing nothing", () => {
  it.each(cases)("%s", async (_label, call, kind, message) => {
    const before = await snapshot();
    let thrown: unknown;
    try {
      await call();
    } catch (error) {
      thrown = error;
    }
    expect(thrown, "expected a refusal").toBeInstanceOf(kind);
    expect((thrown as Error).message).toMatch(message);
    expect(await snapshot()).toEqual(before);
  });

  it("ctx.spawn refuses a child with a bad runAt, delay or undefined args: the attempt fails naming it, no child is inserted", async () => {
    const children = [
      { machine: Parked, state: { order: 1 }, runAt: new Date("+010000-01-01T00:00:00Z") },
      { machine: Parked, state: { order: 1 }, delay: CENTURY_AND_A_DAY },
      { machine: MaybeArgs, args: undefined },
    ];
    const Parent = defineMachine({
      name: "SpawnsBadChild",
      queue: "spawning",
      state: z.object({ which: z.number() }),
      maxAttempts: 1,
      steps: { start: (ctx) => ctx.spawn([children[ctx.state.which]!], "joined"), joined: (ctx) => ctx.done() },
    });
    const runner = db.engine({ queues: { spawning: 2 }, machines: [Parent] });
    await runner.start();
    const messages: string[] = [];
    for (const which of [0, 1, 2]) {
      const { id } = await runner.insert(Parent, { state: { which } });
      const failed = await runner.wait(id, { timeout: "20s" });
      expect(failed.status).toBe("failed");
      messages.push(failed.error!.message);
      const { rows } = await db.pool.query(`select count(*)::int as n from ${S}.instances where parent_id = $1`, [id]);
      expect(rows[0].n).toBe(0);
    }
    await runner.stop();
    expect(messages[0]).toMatch(/ctx\.spawn child 0:.* runAt must be a valid Date from 0001-01-01 to 9999-12-31/);
    expect(messages[1]).toMatch(/ctx\.spawn child 0:.* delay must be at most 100 years/);
    expect(messages[2]).toMatch(/args of MaybeArgs is undefined, which cannot be stored/);
  });
});

describe("insertMany and a schema that validates asynchronously", () => {
  /** The validations started, to wait until every one has settled. */
  const started: Array<Promise<unknown>> = [];
  // A Standard Schema whose validate returns a promise (as zod's async refinements make it).
  const doubled: StandardSchemaV1<unknown, { n: number; doubled: number }> = {
    "~standard": {
      version: 1,
      vendor: "test",
      validate: (value) => {
        const result = new Promise<StandardSchemaV1.Result<{ n: number; doubled: number }>>((resolve) =>
          setImmediate(() => {
            const n = (value as { n?: unknown } | null)?.n;
            resolve(
              typeof n === "number"
                ? { value: { n, doubled: n * 2 } }
                : { issues: [{ message: "must be a number", path: ["n"] }] },
            );
          }),
        );
        started.push(result);
        return result;
      },
    },
  };
  const Doubled = defineJob({ name: "Doubled", queue: "idle", args: doubled, perform: async () => null });
  const stored = async () =>
    (await db.pool.query(`select state from ${S}.instances where machine = 'Doubled' order by id`)).rows.map(
      (r: { state: unknown }) => r.state,
    );

  it("stores each item's validated output beside items validated synchronously", async () => {
    const results = await client.insertMany([
      { machine: Doubled, args: { n: 1 } },
      { machine: Parked, state: { order: 7 } },
      { machine: Doubled, args: { n: 2 } },
    ]);
    expect(results.map((r) => r.inserted)).toEqual([true, true, true]);
    expect(await stored()).toEqual([
      { n: 1, doubled: 2 },
      { n: 2, doubled: 4 },
    ]);
    expect((await client.get(results[1]!.id))!.state).toEqual({ order: 7 });
  });

  it("refuses the whole batch when one item fails, asynchronously or synchronously, writing nothing", async () => {
    const before = await snapshot();
    const storedBefore = await stored();
    await expect(
      client.insertMany([
        { machine: Doubled, args: { n: 3 } },
        { machine: Doubled, args: { n: "three" } },
      ]),
    ).rejects.toThrow(/args of Doubled is invalid: n: must be a number/);
    // A later item refused synchronously while earlier ones still validate: its error, and the
    // others' refusals handled (an unhandled rejection would fail the run).
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on("unhandledRejection", onUnhandled);
    try {
      started.length = 0;
      await expect(
        client.insertMany([
          { machine: Doubled, args: { n: "x" } },
          { machine: Parked, state: { order: "eight" } } as never,
        ]),
      ).rejects.toThrow(/state of Parked is invalid: order/);
      await Promise.allSettled(started);
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      process.off("unhandledRejection", onUnhandled);
    }
    expect(unhandled).toEqual([]);
    expect(await stored()).toEqual(storedBefore);
    expect(await snapshot()).toEqual(before);
  });
});

describe("a null state or args the schema accepts is stored as JSON null", () => {
  it("by insert, insertMany and ctx.spawn, and runs", async () => {
    const Spawner = defineMachine({
      name: "SpawnsNullChild",
      queue: "nulls",
      state: z.object({}),
      steps: {
        start: (ctx) => ctx.spawn([{ machine: NullArgs, args: null }], "joined"),
        joined: (ctx) => ctx.done(ctx.children.map((c) => c.result)),
      },
    });
    const runner = db.engine({ queues: { nulls: 2 }, machines: [NullArgs, Spawner] });
    await runner.start();
    const one = await runner.insert(NullArgs, { args: null });
    const [many] = await runner.insertMany([{ machine: NullArgs, args: null }]);
    const parent = await runner.insert(Spawner, { state: {} });
    for (const { id } of [one, many!])
      expect(await runner.wait(id, { timeout: "20s" })).toMatchObject({
        status: "done",
        state: null,
        result: { got: null },
      });
    expect(await runner.wait(parent.id, { timeout: "20s" })).toMatchObject({ status: "done", result: [{ got: null }] });
    await runner.stop();
    const { rows } = await db.pool.query(
      `select distinct jsonb_typeof(state) as type from ${S}.instances where machine = 'NullArgs'`,
    );
    expect(rows).toEqual([{ type: "null" }]);
  });
});

describe("cancel reasons are bounded and cleaned like step error messages", () => {
  it("a 50 MB reason is stored truncated to 8 KiB", async () => {
    const { id } = await client.insert(Parked, { state: { order: 3 } });
    const reasons: string[] = [];
    const off = client.on("instance:cancelled", (e) => e.id === id && reasons.push(e.reason ?? ""));
    await client.cancel(id, "r".repeat(50 * 1024 * 1024));
    off();
    const stored = (await client.get(id))!.error!.message;
    expect(stored).toHaveLength(8 * 1024);
    expect(stored.endsWith("…")).toBe(true);
    expect(stored).toBe(toErrorRecord(new Error("r".repeat(50 * 1024 * 1024))).message);
    expect(reasons).toEqual([stored]);
    expect((await client.history(id)).at(-1)!.error!.message).toBe(stored);
  });

  it("NUL and lone surrogates are replaced as in a step's error message, not sent to Postgres", async () => {
    const { id } = await client.insert(Parked, { state: { order: 4 } });
    const reason = "stop\u0000now \ud800 please";
    await client.cancel(id, reason);
    expect((await client.get(id))!.error).toEqual({
      name: "Cancelled",
      message: toErrorRecord(new Error(reason)).message,
    });
    expect((await client.get(id))!.error!.message).toBe("stop\\0now \ufffd please");
  });

  it("gen-durable cancel --reason goes through the same path", async () => {
    const { id } = await client.insert(Parked, { state: { order: 5 } });
    const reason = `cli\u0000${"x".repeat(20_000)}`;
    const err: string[] = [];
    const code = await runCli(["cancel", id, "--reason", reason, "--schema", db.schema], COMMANDS, {
      out: () => {},
      err: (line) => err.push(line),
      env: { DATABASE_URL: db.url },
    });
    expect(code, err.join("\n")).toBe(0);
    expect((await client.get(id))!.error!.message).toBe(toErrorRecord(new Error(reason)).message);
  });
});

describe("the CLI refuses an id over the bigint maximum as bad input (exit 2), before any query", () => {
  it.each([
    [["show", OVER]],
    [["show", "--id", OVER]],
    [["cancel", OVER]],
    [["retry", OVER]],
    [["signal", "--id", OVER, "go"]],
    [["list", "--after", OVER]],
    [["move", OVER, "--step", "start"]],
  ])("gen-durable %j", async (args) => {
    const before = await snapshot();
    let stderr = "";
    const code = await runCli([...args, "--schema", db.schema], COMMANDS, {
      out: () => {},
      err: (line) => (stderr += line + "\n"),
      env: { DATABASE_URL: db.url },
    });
    expect(code, stderr).toBe(2);
    expect(stderr).toMatch(/id|after/);
    expect(stderr).not.toMatch(/database error|out of range for type bigint/);
    expect(await snapshot()).toEqual(before);
  });
});
