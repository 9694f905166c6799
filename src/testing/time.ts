/**
 * advanceTime: "let this much time pass" for tests, without waiting. Every
 * due-time, lease, expiry and retention decision in gen-durable compares a
 * stored timestamp with the database clock (now()). Rather than fake that
 * clock, advanceTime moves the stored timestamps of one schema back by the
 * duration, in one transaction, then wakes the engine's loops so that what
 * became due runs at once.
 *
 * The engine's clock (ctx.now()) moves with it: the shift is added to the
 * schema's clock skew, so a deadline a step computed from ctx.now() comes due
 * when it should. On a running engine, the timers that fall due within the
 * span fire in order: time moves to the first one, the engine runs what became
 * due (drain), then on to the next, so a timer set by a step that a timer ran
 * fires too if it falls within the span, as on a time-skipping test server.
 * Timers in the span's last second are left due at its end, for your drain.
 *
 * What it cannot move: the database clock itself, Date.now() in your step
 * code, timestamps inside JSON (state, payloads, ctx.awaited[].insertedAt),
 * and calendar-anchored schedules (a cron slot is a wall-clock time; see
 * docs/testing.md).
 */
import type pg from "pg";
import { withTransaction } from "../db/pool.js";
import { describe, toMs, type Duration } from "../duration.js";
import type { GenDurable } from "../engine.js";
import { ValidationError } from "../errors.js";
import { checkSchemaName } from "../names.js";
import { DEFAULT_SCHEMA } from "../migrate.js";
import { timeQueries } from "../sql/time.js";
import { rejectUnknownKeys } from "../suggest.js";
import { drain } from "./drain.js";
import { testingHook, type TestingHook } from "./hook.js";

/**
 * The time columns advanceTime shifts, per table: the one place to extend
 * when a migration adds a table with a time column. The test
 * "advanceTime covers every time column" fails until each timestamptz column
 * of a migrated schema is either here or in NOT_SHIFTED.
 */
export const SHIFTED: ReadonlyArray<{ table: string; columns: readonly string[]; why: string; unique?: true }> = [
  {
    table: "instances",
    columns: ["run_at", "lease_expires_at", "inserted_at", "updated_at"],
    why: "due times (delays, backoff, snooze, await timeouts), leases (reaper), GC retention (updated_at)",
  },
  { table: "transitions", columns: ["at"], why: "history times" },
  { table: "signals", columns: ["inserted_at", "expires_at", "consumed_at"], why: "inbox retention (expires_at)" },
  {
    table: "nodes",
    columns: ["started_at", "heartbeat_at"],
    why: "node liveness (a live node's next heartbeat refreshes it)",
  },
  { table: "queues", columns: ["updated_at"], why: "when a queue was paused or resumed" },
  {
    table: "rate_limit_buckets",
    columns: ["updated_at", "line_end", "full_at"],
    why:
      "token refill is computed from updated_at; line_end is when the waiting line clears; " +
      "full_at when an idle bucket may be forgotten",
  },
  { table: "gc_retention", columns: ["updated_at"], why: "when a retention was recorded" },
  {
    table: "remembered_keys",
    columns: ["expires_at"],
    why: "idempotency and correlation keys are forgotten once the idempotencyWindow has passed",
  },
  { table: "machines", columns: ["updated_at"], why: "when an engine recorded a machine for the SQL API" },
  { table: "settings", columns: ["updated_at"], why: "when an engine recorded an option for the SQL API" },
  { table: "cron_entries", columns: ["recorded_at"], why: "when a node recorded its cron entries (gen-durable cron)" },
  // (name, tick_at) is the primary key: shifted in two steps, see shiftUnique in sql/time.ts.
  {
    table: "cron_ticks",
    columns: ["tick_at", "inserted_at"],
    why: "the last fired tick of each cron entry",
    unique: true,
  },
];

/** Time columns advanceTime leaves alone, and why. */
export const NOT_SHIFTED: ReadonlyArray<{ table: string; column: string; why: string }> = [
  { table: "migrations", column: "applied_at", why: "bookkeeping; no decision reads it" },
  {
    table: "concurrency_keys",
    column: "run_at",
    why:
      "derived from instances.run_at by a trigger, which recomputes it when instances.run_at is shifted " +
      "(shifting it too would move it twice)",
  },
];

/** An engine, or the pool and schema of one (its loops then notice at their next poll). */
export type TimeTarget =
  | GenDurable
  | {
      /** A pool on the engine's database. */
      pool: pg.Pool;
      /** The engine's schema. Default "gen_durable". */
      schema?: string;
    };

/**
 * Moves every stored time of the engine's schema back by `duration`, as if
 * that much time had passed, then wakes the engine's loops. Resolves once the
 * shift is committed; pair it with drain() to run what became due.
 */
export async function advanceTime(target: TimeTarget, duration: Duration): Promise<void> {
  const ms = toMs(duration, "advanceTime: duration", (m) => new ValidationError(m));
  const resolved = resolveTarget(target);
  if (ms === 0) return resolved.wake();
  const hook = testingHook(target);
  let remaining = ms;
  if (hook?.running) {
    // Timer by timer: each one's step may set the next (a timeout handler that waits again).
    for (;;) {
      // A timer in the span's last second is left due at its end, for the caller's drain: a delay of
      // exactly the span (set a few milliseconds before the call) fires there, as it did before.
      const next = await nextTimer(hook, remaining - END_SLACK_MS);
      if (next === undefined) break;
      await shift(resolved, next);
      remaining -= next;
      await drain(target as GenDurable);
    }
  }
  await shift(resolved, remaining);
}

/** Timers due within this much of the span's end are not stepped through (see advanceTime). */
const END_SLACK_MS = 1000;

/**
 * The earliest timer this engine would run that falls due strictly within the next `withinMs`, in
 * milliseconds from now (ceiled, so the shift makes it due): a runnable row's run_at (delays,
 * backoff, snoozes) in its queues and machines, or an await's deadline. Undefined when none does.
 */
async function nextTimer(hook: TestingHook, withinMs: number): Promise<number | undefined> {
  if (withinMs <= 0) return undefined;
  const { queues, machines } = hook;
  const { rows } = await timeQueries(hook.schema).nextTimer(hook.pool, { queues, machines, withinMs });
  const ms = rows[0]?.ms;
  return ms === null || ms === undefined || ms >= withinMs ? undefined : Math.max(1, ms);
}

async function shift({ pool, schema, wake, clock }: ReturnType<typeof resolveTarget>, ms: number): Promise<void> {
  const q = timeQueries(schema);
  for (let attempt = 1; ; attempt++) {
    try {
      await withTransaction(pool, async (client) => {
        const { rows } = await q.tables(client, { schema });
        const tables = new Set(rows.map((r) => r.table));
        if (!tables.has("instances"))
          throw new ValidationError(`advanceTime: schema "${schema}" has no gen-durable tables; is it migrated?`);
        const skew = tables.has("engine_clock") ? (await q.addSkew(client, { ms })).rows[0]?.skew : undefined;
        for (const { table, columns, unique } of SHIFTED) {
          // A table of a later migration than this schema has: nothing to shift.
          if (!tables.has(table)) continue;
          for (const statement of unique ? q.shiftUnique(table, columns, ms) : [q.shift(table, columns, ms)])
            await statement(client);
        }
        // The rows shifted here come due at this commit, and the engine may run one at once (its
        // poll, a wake-up): its clock must read the new time by then, not only after the sync below,
        // or that step's ctx.now() is the time before the shift.
        if (clock && skew !== undefined) clock.skewMs = Number(skew);
      });
      break;
    } catch (error) {
      // The clock's skew is the database's again (the transaction may have rolled back); a
      // database that cannot answer fails the call with the first error.
      await clock?.sync(pool, schema).catch(() => {});
      // The engine's own transactions lock rows in other orders; a deadlock aborts us, not them: try again.
      if ((error as { code?: unknown }).code !== "40P01" || attempt === 5) throw error;
    }
  }
  await clock?.sync(pool, schema);
  wake();
}

function resolveTarget(target: TimeTarget): {
  pool: pg.Pool;
  schema: string;
  wake: () => void;
  clock?: TestingHook["clock"];
} {
  const hook = testingHook(target);
  if (hook) return { pool: hook.pool, schema: hook.schema, wake: hook.wake, clock: hook.clock };
  const bad = (m: string) => new ValidationError(`advanceTime: ${m}`);
  if (
    typeof target !== "object" ||
    target === null ||
    typeof (target as { pool?: { connect?: unknown } }).pool?.connect !== "function"
  ) {
    throw bad(`target must be a GenDurable engine or { pool, schema? }, got ${describe(target)}`);
  }
  const { pool, schema } = target as { pool: pg.Pool; schema?: string };
  rejectUnknownKeys(target, ["pool", "schema"], "advanceTime", (m) => new ValidationError(m));
  return { pool, schema: checkSchemaName(schema ?? DEFAULT_SCHEMA, bad), wake: () => {} };
}
