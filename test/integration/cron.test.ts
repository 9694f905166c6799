// Cron: config checks, schedule arithmetic in timezones, one instance per tick, missed-tick policies, tick pruning.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import {
  ConfigError,
  GenDurable,
  defineJob,
  defineMachine,
  type CronEntry,
  type GenDurableOptions,
} from "../../src/index.js";
import { resolveConfig } from "../../src/config.js";
import type { ResolvedCronEntry } from "../../src/cron/entries.js";
import { CATCH_UP_MS, dueTicks } from "../../src/loops/cron.js";
import type { StandardSchemaV1 } from "../../src/schema.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const T = `"${db.schema}"`;

const Report = defineJob({
  name: "Report",
  queue: "cron",
  args: z.object({ kind: z.string() }),
  perform: async (args) => ({ kind: args.kind }),
});
const Digest = defineMachine({
  name: "Digest",
  queue: "cron",
  state: z.object({ list: z.string(), sent: z.number().default(0) }),
  steps: { start: (ctx) => ctx.done(ctx.state) },
});

/** Construct-only options (no engine is started): the cron option is checked in the constructor. */
function construct(cron: unknown, extra: Partial<GenDurableOptions> = {}): GenDurable {
  return new GenDurable({
    connectionString: db.url,
    schema: db.schema,
    queues: { cron: 2 },
    machines: [Report, Digest],
    cron: cron as CronEntry[],
    ...extra,
  });
}

function configError(cron: unknown, extra: Partial<GenDurableOptions> = {}): ConfigError {
  try {
    construct(cron, extra);
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as ConfigError).code).toBe("CONFIG");
    return error as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

function entries(cron: CronEntry[]): readonly ResolvedCronEntry[] {
  return resolveConfig({ connectionString: db.url, machines: [Report, Digest], cron }).cron;
}

interface TickRow {
  tick_at: Date;
  instance_id: string;
  machine: string | null;
  state: unknown;
  queue: string | null;
  priority: number | null;
  status: string | null;
}

async function ticksOf(name: string): Promise<TickRow[]> {
  const { rows } = await db.pool.query<TickRow>(
    `select t.tick_at, t.instance_id::text, i.machine, i.state, i.queue, i.priority, i.status
     from ${T}.cron_ticks t left join ${T}.instances i on i.id = t.instance_id where t.name = $1 order by t.tick_at`,
    [name],
  );
  return rows;
}

async function dbNow(): Promise<Date> {
  return (await db.pool.query<{ now: Date }>("select now()")).rows[0]!.now;
}

/** Resolves after the engine's next cron pass has finished. */
function nextCronPass(engine: GenDurable): Promise<number> {
  return new Promise((resolve) => {
    const off = engine.on("loop:tick", (tick) => {
      if (tick.loop !== "cron") return;
      off();
      resolve(tick.count);
    });
  });
}

describe("cron option: checked at construction", () => {
  it("accepts a valid entry list, with defaults filled in", () => {
    const [a, b] = entries([
      { name: "a", schedule: "*/5 * * * *", machine: Report, args: { kind: "x" } },
      {
        name: "b",
        schedule: "0 */10 * * * *",
        timezone: "Europe/Paris",
        machine: "Digest",
        state: { list: "l" },
        priority: -3,
        queue: "other",
        missed: "skip",
      },
    ]);
    expect(a).toMatchObject({
      name: "a",
      timezone: "UTC",
      queue: "cron",
      priority: 0,
      missed: "latest",
      state: { kind: "x" },
      deferred: false,
    });
    // The state is the schema's output, defaults applied, as insert stores it.
    expect(b).toMatchObject({
      name: "b",
      timezone: "Europe/Paris",
      queue: "other",
      priority: -3,
      missed: "skip",
      state: { list: "l", sent: 0 },
    });
    expect(b!.machine).toBe(Digest);
  });

  it("names the entry and quotes the parser on a bad expression", () => {
    expect(
      configError([{ name: "nightly", schedule: "61 * * * *", machine: Report, args: { kind: "x" } }]).message,
    ).toMatch(
      /cron entry "nightly": schedule "61 \* \* \* \*" is not a valid cron expression .*Invalid value for minute: 61/,
    );
    expect(configError([{ name: "n", schedule: "* * * *", machine: Report, args: { kind: "x" } }]).message).toMatch(
      /cron entry "n": schedule "\* \* \* \*" is not a valid cron expression/,
    );
    // 7 fields (years) are not part of the contract: 5, or 6 with seconds first.
    expect(
      configError([{ name: "n", schedule: "0 0 0 1 1 * 2030", machine: Report, args: { kind: "x" } }]).message,
    ).toMatch(/requires exactly 5 or 6 parts/);
    expect(configError([{ name: "n", schedule: "", machine: Report, args: { kind: "x" } }]).message).toMatch(
      /schedule must be a cron expression/,
    );
    expect(configError([{ name: "n", schedule: 5, machine: Report, args: { kind: "x" } }]).message).toMatch(
      /schedule must be a cron expression .* got 5/,
    );
    expect(
      configError([{ name: "feb30", schedule: "0 0 30 2 *", machine: Report, args: { kind: "x" } }]).message,
    ).toMatch(/cron entry "feb30": schedule "0 0 30 2 \*" never fires/);
  });

  it("rejects an unknown timezone", () => {
    expect(
      configError([
        { name: "tz", schedule: "0 9 * * *", timezone: "Mars/Olympus_Mons", machine: Report, args: { kind: "x" } },
      ]).message,
    ).toMatch(/cron entry "tz": unknown timezone "Mars\/Olympus_Mons"/);
    expect(
      configError([{ name: "tz", schedule: "0 9 * * *", timezone: 5, machine: Report, args: { kind: "x" } }]).message,
    ).toMatch(/timezone must be an IANA timezone name/);
  });

  it("requires the machine to be in machines", () => {
    const Stranger = defineJob({ name: "Stranger", queue: "cron", args: z.object({}), perform: async () => null });
    expect(configError([{ name: "s", schedule: "* * * * *", machine: Stranger, args: {} }]).message).toMatch(
      /cron entry "s": machine "Stranger" is not in machines \(machines has "Report", "Digest"\)/,
    );
    expect(configError([{ name: "s", schedule: "* * * * *", machine: "Reprot", args: {} }]).message).toMatch(
      /machine "Reprot" is not in machines .*did you mean "Report"\?/,
    );
    expect(configError([{ name: "s", schedule: "* * * * *", machine: { name: "Report" }, args: {} }]).message).toMatch(
      /machine must be a machine or job from defineMachine\/defineJob/,
    );
    expect(
      configError([{ name: "s", schedule: "* * * * *", machine: Report, args: { kind: "x" } }], { machines: [] })
        .message,
    ).toMatch(/machines is empty/);
  });

  it("rejects duplicate names, bad names and an option that is not an array", () => {
    const e = { schedule: "* * * * *", machine: Report, args: { kind: "x" } };
    expect(
      configError([
        { name: "dup", ...e },
        { name: "other", ...e },
        { name: "dup", ...e },
      ]).message,
    ).toMatch(/cron\[0\] and cron\[2\] are both named "dup"/);
    expect(configError([{ name: "", ...e }]).message).toMatch(/cron\[0\]\.name must be a non-empty string/);
    expect(configError({ name: "x", ...e }).message).toMatch(/cron must be an array of entries/);
    expect(configError([null]).message).toMatch(/cron\[0\] must be an object/);
  });

  it("checks state and args against the machine's schema, and which of the two it takes", () => {
    expect(configError([{ name: "bad", schedule: "* * * * *", machine: Report, args: { kind: 42 } }]).message).toMatch(
      /cron entry "bad": args of Report is invalid: kind: /,
    );
    expect(configError([{ name: "bad", schedule: "* * * * *", machine: Digest, state: {} }]).message).toMatch(
      /cron entry "bad": state of Digest is invalid: list: /,
    );
    expect(
      configError([{ name: "mix", schedule: "* * * * *", machine: Report, state: { kind: "x" } }]).message,
    ).toMatch(/Report is a job: pass args, not state/);
    expect(configError([{ name: "mix", schedule: "* * * * *", machine: Digest, args: { list: "l" } }]).message).toMatch(
      /Digest is a machine: pass state, not args/,
    );
    expect(
      configError([{ name: "big", schedule: "* * * * *", machine: Report, args: { kind: "x".repeat(200) } }], {
        maxPayloadBytes: 100,
      }).message,
    ).toMatch(/cron entry "big": args of Report is (at least )?\d+ bytes of JSON, over the limit of 100 bytes/);
  });

  it("refuses an entry whose value the schema accepts but that cannot be stored: no args for args that may be undefined", () => {
    // The schema accepts undefined, which is not JSON: without this check the entry passed
    // construction and every tick failed on the instances table's NOT NULL state.
    const MaybeArgs = defineJob({
      name: "MaybeArgs",
      queue: "cron",
      args: z.object({ n: z.number() }).optional(),
      perform: async () => null,
    });
    const error = configError([{ name: "no-args", schedule: "* * * * *", machine: MaybeArgs }], {
      machines: [MaybeArgs],
    });
    expect(error.message).toMatch(/cron entry "no-args": args of MaybeArgs is undefined, which cannot be stored/);
    // The same value is refused the same way by insert.
    expect(
      construct([{ name: "with-args", schedule: "* * * * *", machine: MaybeArgs, args: { n: 1 } }], {
        machines: [MaybeArgs],
      }),
    ).toBeInstanceOf(GenDurable);
  });

  it("rejects bad priority, queue, missed and unknown keys with a suggestion", () => {
    const e = { name: "e", schedule: "* * * * *", machine: Report, args: { kind: "x" } };
    expect(configError([{ ...e, priority: 1.5 }]).message).toMatch(
      /cron entry "e": priority must be an integer, got 1.5/,
    );
    expect(configError([{ ...e, queue: " spaced " }]).message).toMatch(
      /cron entry "e": queue must be a non-empty string/,
    );
    expect(configError([{ ...e, missed: "all" }]).message).toMatch(
      /cron entry "e": missed must be "latest" or "skip", got "all"/,
    );
    expect(configError([{ ...e, shedule: "* * * * *" }]).message).toMatch(
      /cron\[0\]: unknown option "shedule" \(did you mean "schedule"\?\)/,
    );
  });
});

describe("cron schedules: next and latest ticks", () => {
  const at = (iso: string) => new Date(iso).getTime();
  const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

  it("reads 5-field schedules in the entry's timezone, across daylight saving time", () => {
    const [ny, utc] = entries([
      { name: "ny", schedule: "0 9 * * *", timezone: "America/New_York", machine: Report, args: { kind: "x" } },
      { name: "utc", schedule: "0 9 * * *", machine: Report, args: { kind: "x" } },
    ]);
    // 9:00 in New York is 14:00 UTC in winter (EST) and 13:00 UTC in summer (EDT).
    expect(iso(ny!.next(at("2025-01-15T00:00:00Z")))).toBe("2025-01-15T14:00:00.000Z");
    expect(iso(ny!.next(at("2025-03-08T15:00:00Z")))).toBe("2025-03-09T13:00:00.000Z"); // DST began at 2:00 that morning
    expect(iso(ny!.next(at("2025-11-01T14:00:00Z")))).toBe("2025-11-02T14:00:00.000Z"); // and ended on Nov 2
    expect(iso(ny!.latest(at("2025-07-04T12:59:59Z")))).toBe("2025-07-03T13:00:00.000Z");
    expect(iso(ny!.latest(at("2025-07-04T13:00:00Z")))).toBe("2025-07-04T13:00:00.000Z"); // at or before: inclusive
    expect(iso(utc!.next(at("2025-01-15T00:00:00Z")))).toBe("2025-01-15T09:00:00.000Z");
  });

  it("reads 6-field schedules with seconds first, and nicknames", () => {
    const [every15s, sec, daily] = entries([
      { name: "a", schedule: "*/15 * * * * *", machine: Report, args: { kind: "x" } },
      { name: "b", schedule: "* * * * * *", machine: Report, args: { kind: "x" } },
      { name: "c", schedule: "@daily", timezone: "Asia/Tokyo", machine: Report, args: { kind: "x" } },
    ]);
    expect(iso(every15s!.next(at("2025-01-01T00:00:07Z")))).toBe("2025-01-01T00:00:15.000Z");
    // Strictly after: a tick exactly at the reference is not "next".
    expect(iso(sec!.next(at("2025-01-01T00:00:07Z")))).toBe("2025-01-01T00:00:08.000Z");
    expect(iso(daily!.next(at("2025-01-01T00:00:00Z")))).toBe("2025-01-01T15:00:00.000Z"); // midnight in Tokyo
  });

  it("fires every tick of a short gap, and applies the missed policy to a long one", () => {
    const [latest, skip] = entries([
      { name: "l", schedule: "* * * * * *", machine: Report, args: { kind: "x" } },
      { name: "s", schedule: "* * * * * *", machine: Report, args: { kind: "x" }, missed: "skip" },
    ]);
    const now = at("2025-01-01T12:00:00.500Z");
    const threeSecondsAgo = at("2025-01-01T11:59:57Z");
    const expected = ["2025-01-01T11:59:58.000Z", "2025-01-01T11:59:59.000Z", "2025-01-01T12:00:00.000Z"];
    expect(dueTicks(latest!, threeSecondsAgo, now).map(iso)).toEqual(expected);
    // A gap shorter than the catch-up window is not "missed": even "skip" fires all of it.
    expect(dueTicks(skip!, threeSecondsAgo, now).map(iso)).toEqual(expected);
    const anHourAgo = now - 3600_000;
    expect(dueTicks(latest!, anHourAgo, now).map(iso)).toEqual(["2025-01-01T12:00:00.000Z"]);
    expect(dueTicks(skip!, anHourAgo, now)).toEqual([]);
    // Just past the window: missed.
    expect(dueTicks(skip!, now - CATCH_UP_MS - 1000, now)).toEqual([]);
    // Nothing due yet.
    expect(dueTicks(latest!, now, now)).toEqual([]);
  });
});

describe("cron loop", () => {
  it("inserts one instance per tick, as configured, and records the tick with its instance id", async () => {
    const engine = db.engine({
      queues: { cron: 4 },
      machines: [Report, Digest],
      cron: [
        { name: "every-second", schedule: "* * * * * *", machine: Report, args: { kind: "fast" }, priority: 5 },
        {
          name: "digest-every-second",
          schedule: "* * * * * *",
          machine: Digest,
          state: { list: "news" },
          queue: "cron",
        },
      ],
    });
    const passes: number[] = [];
    engine.on("loop:tick", (tick) => tick.loop === "cron" && passes.push(tick.count));
    const errors: unknown[] = [];
    engine.on("engine:error", ({ error }) => errors.push(error));
    await engine.start();
    const started = await dbNow();
    const rows = await eventually("3 ticks of every-second, run to done", async () => {
      const ticks = await ticksOf("every-second");
      return ticks.length >= 3 && ticks.slice(0, 3).every((t) => t.status === "done") && ticks;
    });
    await engine.stop();
    expect(errors).toEqual([]);
    expect(passes.some((count) => count > 0)).toBe(true);
    for (const row of rows) {
      expect(row).toMatchObject({ machine: "Report", state: { kind: "fast" }, queue: "cron", priority: 5 });
      // Ticks are the schedule's whole seconds, none before the engine started (no backfill for a new entry).
      expect(row.tick_at.getMilliseconds()).toBe(0);
      expect(row.tick_at.getTime()).toBeGreaterThan(started.getTime() - 1000);
    }
    const times = rows.map((r) => r.tick_at.getTime());
    // One row per second, no gaps, no repeats.
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBe(1000);
    expect(new Set(rows.map((r) => r.instance_id)).size).toBe(rows.length);
    const digest = await ticksOf("digest-every-second");
    expect(digest.length).toBeGreaterThanOrEqual(2);
    expect(digest[0]).toMatchObject({
      machine: "Digest",
      state: { list: "news", sent: 0 },
      queue: "cron",
      priority: 0,
    });
    // Every instance of the job came from a tick: nothing inserted without its tick row.
    const { rows: count } = await db.pool.query<{ n: number }>(
      `select count(*)::int as n from ${T}.instances where machine = 'Report'`,
    );
    expect(count[0]!.n).toBe(rows.length);
  });

  it("inserts nothing for a tick another node already recorded", async () => {
    const name = "claimed-elsewhere";
    // Ticks 2, 3 and 4 seconds ahead, recorded as if fired by another node (instance 0 does not exist).
    const { rows: ahead } = await db.pool.query<{ tick_at: Date }>(
      `insert into ${T}.cron_ticks (name, tick_at, instance_id)
       select $1, date_trunc('second', now()) + make_interval(secs => s), 0 from generate_series(2, 4) s returning tick_at`,
      [name],
    );
    const engine = db.engine({
      queues: { cron: 2 },
      machines: [Report],
      cron: [{ name, schedule: "* * * * * *", machine: Report, args: { kind: "x" } }],
    });
    await engine.start();
    const last = Math.max(...ahead.map((r) => r.tick_at.getTime()));
    await eventually("a tick after the recorded ones", async () =>
      (await ticksOf(name)).some((t) => t.tick_at.getTime() > last),
    );
    await engine.stop();
    const ticks = await ticksOf(name);
    for (const tick of ticks) {
      const recordedElsewhere = ahead.some((a) => a.tick_at.getTime() === tick.tick_at.getTime());
      expect(tick.instance_id === "0", `tick ${tick.tick_at.toISOString()}`).toBe(recordedElsewhere);
      if (!recordedElsewhere) expect(tick.machine).toBe("Report");
    }
    const { rows } = await db.pool.query<{ n: number }>(
      `select count(*)::int as n from ${T}.instances i join ${T}.cron_ticks t on t.instance_id = i.id where t.name = $1`,
      [name],
    );
    expect(rows[0]!.n).toBe(ticks.length - 3);
  });

  it("two engines on one database insert one instance per tick", async () => {
    const name = "two-nodes";
    const options = {
      queues: { cron: 2 },
      machines: [Report],
      cron: [{ name, schedule: "* * * * * *", machine: Report, args: { kind: "x" } }],
    };
    const a = db.engine({ ...options, nodeId: "cron-a" });
    const b = db.engine({ ...options, nodeId: "cron-b" });
    await Promise.all([a.start(), b.start()]);
    const inserted = { a: 0, b: 0 };
    a.on("loop:tick", (t) => t.loop === "cron" && (inserted.a += t.count));
    b.on("loop:tick", (t) => t.loop === "cron" && (inserted.b += t.count));
    await eventually("4 ticks", async () => (await ticksOf(name)).length >= 4);
    await Promise.all([a.stop(), b.stop()]);
    const ticks = await ticksOf(name);
    const times = ticks.map((t) => t.tick_at.getTime());
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBe(1000);
    expect(ticks.every((t) => t.machine === "Report")).toBe(true);
    // The counts the nodes reported add up to the ticks: no tick inserted twice.
    expect(inserted.a + inserted.b).toBe(ticks.length);
  });

  it('missed: "latest" inserts one instance for the most recent missed tick, not one per missed tick', async () => {
    const name = "hourly-latest";
    // The cluster last fired this entry 5 hours ago; every node was down since.
    await db.pool.query(
      `insert into ${T}.cron_ticks (name, tick_at, instance_id) values ($1, date_trunc('hour', now()) - interval '5 hours', 0)`,
      [name],
    );
    const engine = db.engine({
      queues: { cron: 2 },
      machines: [Report],
      cron: [{ name, schedule: "0 * * * *", machine: Report, args: { kind: "catch-up" } }],
    });
    const pass = nextCronPass(engine);
    await engine.start();
    expect(await pass).toBe(1);
    const now = await dbNow();
    await engine.stop();
    const ticks = await ticksOf(name);
    expect(ticks).toHaveLength(2);
    const fired = ticks[1]!;
    // The most recent hour boundary at or before the pass: the latest missed tick (not the 4 before it).
    expect(fired.tick_at.getTime() % 3600_000).toBe(0);
    expect(fired.tick_at.getTime()).toBeLessThanOrEqual(now.getTime());
    expect(fired.tick_at.getTime()).toBeGreaterThan(now.getTime() - 3600_000);
    expect(fired).toMatchObject({ machine: "Report", state: { kind: "catch-up" } });
  });

  it('missed: "skip" inserts nothing for missed ticks, then fires future ones', async () => {
    const name = "skip-missed";
    await db.pool.query(
      `insert into ${T}.cron_ticks (name, tick_at, instance_id) values ($1, date_trunc('second', now()) - interval '1 hour', 0)`,
      [name],
    );
    const before = await dbNow();
    const engine = db.engine({
      queues: { cron: 2 },
      machines: [Report],
      cron: [{ name, schedule: "* * * * * *", machine: Report, args: { kind: "x" }, missed: "skip" }],
    });
    await engine.start();
    await eventually("2 new ticks", async () => (await ticksOf(name)).length >= 3);
    await engine.stop();
    const [old, ...fired] = await ticksOf(name);
    expect(old!.instance_id).toBe("0");
    // None of the hour's 3,600 missed ticks: the first fired tick comes after the engine started.
    for (const tick of fired) expect(tick.tick_at.getTime()).toBeGreaterThan(before.getTime());
    expect(fired.every((t) => t.machine === "Report")).toBe(true);
  });

  it("fires every tick of a short outage (a quick restart), whatever the policy", async () => {
    const name = "short-gap";
    const { rows } = await db.pool.query<{ tick_at: Date }>(
      `insert into ${T}.cron_ticks (name, tick_at, instance_id) values ($1, date_trunc('second', now()) - interval '5 seconds', 0) returning tick_at`,
      [name],
    );
    const last = rows[0]!.tick_at.getTime();
    const engine = db.engine({
      queues: { cron: 2 },
      machines: [Report],
      cron: [{ name, schedule: "* * * * * *", machine: Report, args: { kind: "x" }, missed: "skip" }],
    });
    const pass = nextCronPass(engine);
    await engine.start();
    const firstPass = await pass;
    await engine.stop();
    const ticks = await ticksOf(name);
    // The five (or so) seconds since the last tick all fired in the first pass, one by one.
    expect(firstPass).toBeGreaterThanOrEqual(5);
    const times = ticks.map((t) => t.tick_at.getTime());
    expect(times[0]).toBe(last);
    for (let i = 1; i < times.length; i++) expect(times[i]! - times[i - 1]!).toBe(1000);
  });

  it("starts an entry never seen before from now: no backfill", async () => {
    const name = "brand-new-hourly";
    const engine = db.engine({
      queues: { cron: 2 },
      machines: [Report],
      cron: [{ name, schedule: "0 * * * *", machine: Report, args: { kind: "x" } }],
    });
    const pass = nextCronPass(engine);
    await engine.start();
    expect(await pass).toBe(0);
    await engine.stop();
    // This hour's tick (already past) is not fired: the entry starts now.
    expect(await ticksOf(name)).toEqual([]);
  });

  it("prunes tick rows older than a day but keeps the latest of each entry", async () => {
    await db.pool.query(
      `insert into ${T}.cron_ticks (name, tick_at, instance_id) values
         ('prune-a', now() - interval '3 days', 0), ('prune-a', now() - interval '2 days', 0),
         ('prune-b', now() - interval '2 days', 0), ('prune-b', now() - interval '1 hour', 0)`,
    );
    // Yearly: its next tick is further away than a timer can wait (2^31 ms), which must not make the loop spin.
    const engine = db.engine({
      queues: { cron: 2 },
      machines: [Report],
      cron: [{ name: "prune-trigger", schedule: "0 0 1 1 *", machine: Report, args: { kind: "x" } }],
    });
    let passes = 0;
    engine.on("loop:tick", (tick) => tick.loop === "cron" && passes++);
    const pass = nextCronPass(engine);
    await engine.start();
    await pass;
    // A window to observe the absence of extra passes (the idle pass comes after a minute).
    await new Promise((resolve) => setTimeout(resolve, 500));
    await engine.stop();
    expect(passes).toBeLessThan(3);
    const { rows } = await db.pool.query<{ name: string; age: string }>(
      `select name, round(extract(epoch from now() - tick_at) / 3600)::text as age from ${T}.cron_ticks where name like 'prune-%' order by name, tick_at`,
    );
    expect(rows).toEqual([
      { name: "prune-a", age: "48" },
      { name: "prune-b", age: "1" },
    ]);
  });

  it("checks an asynchronous schema in start(): a bad value fails start() with a ConfigError before any loop runs", async () => {
    // A Standard Schema that only validates asynchronously (as zod does with async refinements).
    const asyncSchema: StandardSchemaV1<{ n: number }, { n: number; checked: true }> = {
      "~standard": {
        version: 1,
        vendor: "test",
        validate: async (value) => {
          const n = (value as { n?: unknown } | null)?.n;
          return typeof n === "number"
            ? { value: { n, checked: true as const } }
            : { issues: [{ message: "n must be a number", path: ["n"] }] };
        },
      },
    };
    const AsyncJob = defineJob({ name: "AsyncJob", queue: "cron", args: asyncSchema, perform: async () => null });
    const good = { name: "async-good", schedule: "* * * * * *", machine: AsyncJob, args: { n: 1 } };
    const bad = db.engine({
      queues: { cron: 2 },
      machines: [AsyncJob],
      cron: [good, { name: "async-bad", schedule: "* * * * * *", machine: AsyncJob, args: { n: "one" } }],
    });
    let passes = 0;
    bad.on("loop:tick", () => passes++);
    const refused = await bad.start().then(
      () => null,
      (error: unknown) => error,
    );
    expect(refused).toBeInstanceOf(ConfigError);
    expect(String(refused)).toMatch(/cron entry "async-bad": args of AsyncJob is invalid: n: n must be a number/);
    expect(passes).toBe(0);
    expect(await ticksOf("async-bad")).toEqual([]);
    // A value the schema accepts is stored as its output (undefined output: refused the same way).
    const engine = db.engine({ queues: { cron: 2 }, machines: [AsyncJob], cron: [good] });
    await engine.start();
    await eventually("2 ticks of the good entry", async () => (await ticksOf("async-good")).length >= 2);
    await engine.stop();
    expect((await ticksOf("async-good"))[0]!.state).toEqual({ n: 1, checked: true });
  });

  it("fires an entry whose args are null (a schema that accepts null): stored as JSON null, not SQL NULL", async () => {
    const NullArgs = defineJob({
      name: "NullArgs",
      queue: "cron",
      args: z.null(),
      perform: async (args) => ({ got: args }),
    });
    const engine = db.engine({
      queues: { cron: 2 },
      machines: [NullArgs],
      cron: [{ name: "null-args", schedule: "* * * * * *", machine: NullArgs, args: null }],
    });
    const errors: unknown[] = [];
    engine.on("engine:error", ({ error }) => errors.push(error));
    await engine.start();
    const [tick] = await eventually("a tick of the null-args entry", async () => {
      const rows = await ticksOf("null-args");
      return rows.length > 0 && rows[0]!.status === "done" ? rows : null;
    });
    await engine.stop();
    expect(errors).toEqual([]);
    expect(tick!.state).toBeNull();
    const { rows } = await db.pool.query(
      `select jsonb_typeof(state) as type, result from ${T}.instances where id = $1`,
      [tick!.instance_id],
    );
    expect(rows[0]).toEqual({ type: "null", result: { got: null } });
  });

  it("runs no cron loop on a pure client (no queues)", async () => {
    const client = db.engine({
      machines: [Report],
      cron: [{ name: "client-only", schedule: "* * * * * *", machine: Report, args: { kind: "x" } }],
    });
    let passes = 0;
    client.on("loop:tick", (tick) => tick.loop === "cron" && passes++);
    await client.start();
    // A worker started afterwards on the same entry fires it; the client, started first, never passed.
    const worker = db.engine({
      queues: { cron: 1 },
      machines: [Report],
      cron: [{ name: "client-only", schedule: "* * * * * *", machine: Report, args: { kind: "x" } }],
    });
    await worker.start();
    await eventually("a tick from the worker", async () => (await ticksOf("client-only")).length >= 1);
    await Promise.all([client.stop(), worker.stop()]);
    expect(passes).toBe(0);
  });
});
