// Scenario 9: every name and key the API accepts, fuzzed. Each call succeeds or throws a clear error
// of the engine's own (a ValidationError for calls, a ConfigError for definitions and options); no
// input reaches Postgres as SQL: an event trigger on ddl_command_start, in a database of this test's
// own, records any DDL, and a sentinel table must survive. A stored name or key reads back exactly.
// RELIABILITY_FULL=1 runs 2,000 cases per property instead of 150.
import fc from "fast-check";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import {
  ConfigError,
  defineJob,
  defineMachine,
  GenDurable,
  GenDurableError,
  InstanceTerminatedError,
  InvalidStateError,
  migrate,
  UnknownInstanceError,
  ValidationError,
} from "../../src/index.js";
import { createDatabase } from "../support/db.js";

const FULL = process.env.RELIABILITY_FULL === "1";
const RUNS = FULL ? 2000 : 150;
/** Per property: the full run takes minutes. */
const TIMEOUT = FULL ? 1_800_000 : 60_000;
const SCHEMA = "fuzzed";

/** Text that has broken SQL builders, drivers and parsers somewhere. */
const NASTY = [
  "'; drop table public.sentinel; --",
  '"; drop schema fuzzed cascade; --',
  "$$; drop table public.sentinel; $$",
  "\\",
  "\\'",
  "%",
  "_",
  "'",
  '"',
  "--",
  "/*",
  "$1",
  "?",
  "\u0000",
  "a\u0000b",
  "\ud800",
  "\udc00x",
  "😀",
  "\u202e",
  "\ufeff",
  " ",
  " padded ",
  "\t",
  "\n",
  "",
  "x".repeat(201),
  "x".repeat(1001),
  "null",
  "undefined",
  "__proto__",
  "constructor",
  "pg_catalog",
  "Robert'); DROP TABLE Students;--",
];
const text = fc.oneof(
  { weight: 3, arbitrary: fc.string({ unit: "binary", maxLength: 40 }) },
  { weight: 2, arbitrary: fc.string({ unit: "grapheme", maxLength: 40 }) },
  { weight: 2, arbitrary: fc.constantFrom(...NASTY) },
  { weight: 1, arbitrary: fc.tuple(fc.constantFrom(...NASTY), fc.string({ maxLength: 5 })).map(([a, b]) => a + b) },
  { weight: 1, arbitrary: fc.string({ unit: "binary", minLength: 190, maxLength: 1100 }) },
);
/** Anything at all where a string is expected. */
const anything = fc.oneof(
  { weight: 6, arbitrary: text },
  { weight: 1, arbitrary: fc.anything() },
  { weight: 1, arbitrary: fc.constantFrom(undefined, null, 0, -1, 1.5, Number.NaN, 10n, Symbol("s"), {}, []) },
);
const idLike = fc.oneof(
  text,
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(String),
  fc.constantFrom("0", "-1", "01", "9223372036854775807", "9223372036854775808", "1e3", " 1", "1 "),
);

const Fuzz = defineMachine({
  name: "Fuzz",
  queue: "fuzz",
  state: z.object({ n: z.number() }),
  steps: { start: (ctx) => ctx.await("never", "start") },
});

let db: Awaited<ReturnType<typeof createDatabase>>;
let admin: pg.Client;
let engine: GenDurable;
const calls: Record<string, { ok: number; refused: number }> = {};

async function ddlSeen(): Promise<string[]> {
  const { rows } = await admin.query<{ tag: string }>("select tag from public.ddl_log order by id");
  return rows.map((r) => r.tag);
}

beforeAll(async () => {
  db = await createDatabase("rel_fuzz");
  await migrate({ connectionString: db.url, schema: SCHEMA });
  admin = new pg.Client({ connectionString: db.url });
  await admin.connect();
  await admin.query(`
    create table public.sentinel (id int primary key);
    insert into public.sentinel values (1);
    create table public.ddl_log (id serial primary key, tag text not null, at timestamptz not null default now());
    create function public.log_ddl() returns event_trigger language plpgsql as $$
      begin insert into public.ddl_log (tag) values (tg_tag); end $$;
    create event trigger log_ddl on ddl_command_start execute function public.log_ddl();`);
  engine = new GenDurable({
    connectionString: db.url,
    schema: SCHEMA,
    rateLimits: { fuzz: { limit: 1_000_000, period: "1s" } },
    pollInterval: 200,
  });
  await engine.start();
  expect(await ddlSeen()).toEqual([]);
});

afterAll(async () => {
  await engine?.stop();
  await admin?.end();
  await db?.drop();
});

/**
 * Runs `call`; it must succeed or throw one of `allowed` (each a GenDurableError with a message).
 * Counts the outcome under `name`.
 */
async function expectClear(
  name: string,
  call: () => unknown,
  allowed: Array<new (...args: never[]) => GenDurableError> = [ValidationError],
): Promise<boolean> {
  const tally = (calls[name] ??= { ok: 0, refused: 0 });
  try {
    await call();
    tally.ok++;
    return true;
  } catch (error) {
    if (!allowed.some((kind) => error instanceof kind)) {
      throw new Error(`${name} threw ${String(error)} (${(error as Error)?.constructor?.name})`, { cause: error });
    }
    expect((error as Error).message.length).toBeGreaterThan(10);
    tally.refused++;
    return false;
  }
}

/**
 * A fixed seed by default, so that CI runs the same cases every time; FUZZ_SEED picks another, and
 * the full run draws a fresh one (fast-check prints the seed and the counterexample of a failure).
 */
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : FULL ? undefined : 20261205;
const settings = { numRuns: RUNS, endOnFailure: true, ...(SEED === undefined ? {} : { seed: SEED }) };

describe("fuzzed names and keys", () => {
  it(
    "definitions: machine, step and queue names, and rate-limit names on steps (ConfigError or ok)",
    async () => {
      await fc.assert(
        fc.asyncProperty(anything, anything, anything, async (name, stepName, queue) => {
          await expectClear(
            "defineMachine",
            () =>
              defineMachine({
                name: name as string,
                queue: queue as string,
                state: z.object({}),
                steps: { start: () => null, [stepName as string]: () => null } as never,
              }),
            [ConfigError],
          );
          await expectClear(
            "defineJob",
            () =>
              defineJob({
                name: name as string,
                queue: queue as string,
                args: z.object({}),
                rateLimit: { name: stepName as string },
                perform: async () => null,
              }),
            [ConfigError],
          );
        }),
        settings,
      );
    },
    TIMEOUT,
  );

  it(
    "engine options: schema, nodeId, queue names, rate-limit names, cron names (ConfigError or ok)",
    async () => {
      await fc.assert(
        fc.asyncProperty(
          anything,
          anything,
          anything,
          anything,
          anything,
          async (schema, nodeId, queue, limit, cron) => {
            const base = { connectionString: db.url };
            await expectClear("GenDurable schema", () => new GenDurable({ ...base, schema: schema as string }), [
              ConfigError,
            ]);
            await expectClear("GenDurable nodeId", () => new GenDurable({ ...base, nodeId: nodeId as string }), [
              ConfigError,
            ]);
            await expectClear(
              "GenDurable queues",
              () => new GenDurable({ ...base, queues: { [queue as string]: 1 } }),
              [ConfigError],
            );
            await expectClear(
              "GenDurable rateLimits",
              () => new GenDurable({ ...base, rateLimits: { [limit as string]: { limit: 1, period: "1s" } } }),
              [ConfigError],
            );
            await expectClear(
              "GenDurable cron",
              () =>
                new GenDurable({
                  ...base,
                  machines: [Fuzz],
                  cron: [{ name: cron as string, schedule: "* * * * *", machine: Fuzz, state: { n: 1 } }],
                }),
              [ConfigError],
            );
          },
        ),
        settings,
      );
    },
    TIMEOUT,
  );

  it(
    "insert: queue, correlation and concurrency keys; a stored key reads back exactly",
    async () => {
      await fc.assert(
        fc.asyncProperty(anything, anything, anything, async (queue, correlationKey, concurrencyKey) => {
          let inserted: string | undefined;
          const ok = await expectClear("insert", async () => {
            ({ id: inserted } = await engine.insert(Fuzz, {
              state: { n: 1 },
              queue: queue as string,
              correlationKey: correlationKey as string,
              concurrencyKey: concurrencyKey as string,
            }));
          });
          if (!ok) return;
          const row = await engine.get(inserted!);
          expect(row?.queue).toBe(queue ?? "fuzz");
          expect(row?.correlationKey).toBe(correlationKey ?? null);
          expect(row?.concurrencyKey).toBe(concurrencyKey ?? null);
          if (typeof correlationKey === "string") expect((await engine.get({ correlationKey }))?.id).toBe(inserted);
          await engine.cancel(inserted!);
        }),
        settings,
      );
    },
    TIMEOUT,
  );

  it(
    "signal: target keys and ids, event names, dedup keys; reads: get, list, explain, history",
    async () => {
      const { id: live } = await engine.insert(Fuzz, { state: { n: 2 } });
      await fc.assert(
        fc.asyncProperty(anything, anything, anything, idLike, async (key, event, dedupKey, id) => {
          await expectClear("signal by key", () =>
            engine.signal(key as string, event as string, null, {
              dedupKey: dedupKey as string,
              ifMissing: "keep",
            }),
          );
          await expectClear("signal by id", () => engine.signal({ id: id as string }, "evt", null), [
            ValidationError,
            UnknownInstanceError,
            InstanceTerminatedError,
          ]);
          await expectClear("signal to a live instance", () => engine.signal({ id: live }, event as string, null));
          await expectClear("get", () => engine.get(id as string));
          await expectClear("get by key", () => engine.get({ correlationKey: key as string }));
          await expectClear("list", () =>
            engine.list({ machine: event as string, queue: key as string, correlationKey: dedupKey as string }),
          );
          await expectClear("list after", () => engine.list({ after: id as string }));
          await expectClear("history", () => engine.history(id as string));
          await expectClear("explain", () => engine.explain(id as string), [ValidationError, UnknownInstanceError]);
        }),
        settings,
      );
    },
    TIMEOUT,
  );

  it(
    "operations: cancel, retry, queues, rate limits, prune",
    async () => {
      await fc.assert(
        fc.asyncProperty(anything, anything, idLike, async (name, partition, id) => {
          const ops = [ValidationError, UnknownInstanceError, InstanceTerminatedError, InvalidStateError];
          await expectClear("cancel", () => engine.cancel(id as string, name as string), ops);
          await expectClear("retry", () => engine.retry(id as string), ops);
          if (typeof name === "string" && name !== "fuzz") {
            // Pausing a valid name writes a row: resume it so that later runs see no paused queues.
            if (await expectClear("pauseQueue", () => engine.pauseQueue(name))) await engine.resumeQueue(name);
          } else await expectClear("pauseQueue", () => engine.pauseQueue(name as string));
          await expectClear("resumeQueue", () => engine.resumeQueue(name as string));
          await expectClear("consume", () => engine.consume(name as string));
          await expectClear("consume partition", () => engine.consume("fuzz", { partition: partition as string }));
          await expectClear("rateLimitBuckets", () => engine.rateLimitBuckets(name as string));
          await expectClear("prune", () => engine.prune({ machine: name as string, olderThan: "36500d" }));
        }),
        settings,
      );
    },
    TIMEOUT,
  );

  it("ran no DDL, and the sentinel table survived", async () => {
    expect(await ddlSeen()).toEqual([]);
    const { rows } = await admin.query("select id from public.sentinel");
    expect(rows).toEqual([{ id: 1 }]);
    const { rows: tables } = await admin.query(
      "select count(*)::int as n from information_schema.tables where table_schema = $1",
      [SCHEMA],
    );
    expect(tables[0].n).toBeGreaterThan(5);
    const summary = Object.entries(calls)
      .map(([name, { ok, refused }]) => `${name} ${ok}/${refused}`)
      .join(", ");
    console.log(`${RUNS} cases per property; calls ok/refused: ${summary}; DDL statements: 0`);
  });
});
