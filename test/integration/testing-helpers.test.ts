// gen-durable/testing: runStep, drain and advanceTime, against real Postgres.
// Nothing here waits for wall-clock time to pass: delays of hours and days are
// made due with advanceTime, and drain says when the engine is idle.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine, StepTimeoutError, ValidationError } from "../../src/index.js";
import { advanceTime, drain, DrainTimeoutError, runStep } from "../../src/testing/index.js";
import { NOT_SHIFTED, SHIFTED } from "../../src/testing/time.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const ledger = `${db.schema}_ledger`;
await db.pool.query(`create table ${ledger} (note text not null)`);

const order = z.object({ order: z.number().int(), notes: z.array(z.string()).default([]) });

const Checkout = defineMachine({
  name: "Checkout",
  queue: "th",
  state: order,
  steps: {
    start: (ctx) => ctx.await("paid", "ship", ctx.state, { timeout: "1d", onTimeout: "expire" }),
    ship: (ctx) =>
      ctx.next(
        "followUp",
        { ...ctx.state, notes: [...ctx.state.notes, `paid ${JSON.stringify(ctx.awaited[0]?.payload)}`] },
        { delay: "1h" },
      ),
    followUp: (ctx) => ctx.done({ order: ctx.state.order, notes: ctx.state.notes }),
    expire: (ctx) => ctx.cancel(`order ${ctx.state.order} was never paid`),
  },
});

const Email = defineJob({
  name: "Email",
  queue: "th",
  args: z.object({ to: z.string() }),
  perform: async (args) => ({ sent: args.to }),
});

const Fanout = defineMachine({
  name: "Fanout",
  queue: "th",
  state: z.object({ n: z.number() }),
  steps: {
    start: (ctx) =>
      ctx.spawn(
        [
          { machine: Email, args: { to: "a@example.com" }, correlationKey: "mail:a" },
          { machine: Checkout, state: { order: 7 }, delay: "5m", priority: 3 },
        ],
        "join",
      ),
    join: (ctx) => ctx.done(ctx.children.map((c) => `${c.machine}:${c.status}`)),
  },
});

const Misc = defineMachine({
  name: "Misc",
  queue: "th",
  state: z.object({ n: z.number() }),
  maxAttempts: 3,
  backoff: { type: "fixed", delay: "10m" },
  steps: {
    start: (ctx) => {
      if (ctx.state.n === 1) return ctx.snooze("30s");
      if (ctx.state.n === 2) return ctx.cancel();
      if (ctx.state.n === 3) return ctx.next("start", { n: "three" } as never);
      if (ctx.state.n === 4) return { next: "start" } as never;
      if (ctx.state.n === 5) return ctx.next("nowhere" as never);
      if (ctx.state.n === 6)
        return ctx.next("start", undefined, { runAt: new Date("2030-01-01T00:00:00Z"), priority: -2 });
      if (ctx.state.n === 7) return ctx.await({ all: ["a", "b"] }, "start");
      throw new Error(`n=${ctx.state.n} on attempt ${ctx.attempt}`);
    },
    slow: {
      timeout: 50,
      run: (ctx) =>
        new Promise((_, reject) => ctx.abortSignal.addEventListener("abort", () => reject(ctx.abortSignal.reason))),
    },
    facts: (ctx) =>
      ctx.done({
        id: ctx.id,
        attempt: ctx.attempt,
        key: ctx.correlationKey,
        awaited: ctx.awaited.map((s) => ({ ...s, insertedAt: s.insertedAt.toISOString() })),
        children: ctx.children,
        at: ctx.insertedAt.toISOString(),
      }),
  },
});

const Ledger = defineMachine({
  name: "Ledger",
  queue: "th",
  state: z.object({ note: z.string(), fail: z.boolean() }),
  steps: {
    start: {
      transactional: true,
      run: async (ctx) => {
        await ctx.client.query(`insert into ${ledger} (note) values ($1)`, [ctx.state.note]);
        if (ctx.state.fail) throw new Error("after the write");
        return ctx.done({ wrote: ctx.state.note });
      },
    },
  },
});

let flakyRuns = 0;
const Flaky = defineJob({
  name: "Flaky",
  queue: "th",
  args: z.object({ failures: z.number() }),
  backoff: { type: "exponential", base: "1m", max: "1h", jitter: false },
  perform: async (args, ctx) => {
    flakyRuns++;
    if (ctx.attempt <= args.failures) throw new Error(`attempt ${ctx.attempt} failed`);
    return { attempt: ctx.attempt };
  },
});

const Pruned = defineJob({
  name: "Pruned",
  queue: "th",
  args: z.object({}),
  retention: "1h",
  perform: async () => "ok",
});

let release: () => void = () => {};
const Blocker = defineJob({
  name: "Blocker",
  queue: "th",
  args: z.object({}),
  perform: () => new Promise<string>((resolve) => (release = () => resolve("released"))),
});

const engine = db.engine({
  queues: { th: 4 },
  machines: [Checkout, Email, Fanout, Misc, Ledger, Flaky, Pruned, Blocker],
  pollInterval: "1h",
  reaperInterval: "1h",
});
await engine.start();

const errorOf = (r: { type: string }) => {
  expect(r.type).toBe("error");
  return r as {
    type: "error";
    error: unknown;
    record: { message: string; name: string };
    willRetry: boolean;
    retryDelay?: number;
  };
};

/**
 * advanceTime, then drain, counting the steps either ran. A timer due inside the span runs inside
 * advanceTime, which steps through them in order; one due in the span's last second is left to the
 * drain. A delay "exactly the span" away lands on either side of that line depending on how much
 * real time passed since it was set (over a second on a loaded host): the counts cover both.
 */
async function advanceAndDrain(duration: string): Promise<{ steps: number; errors: number; done: number }> {
  const counts = { steps: 0, errors: 0, done: 0 };
  const offs = [
    engine.on("step:stop", () => counts.steps++),
    engine.on("step:exception", () => counts.errors++),
    engine.on("instance:done", () => counts.done++),
  ];
  try {
    await advanceTime(engine, duration);
    await drain(engine);
  } finally {
    for (const off of offs) off();
  }
  return counts;
}

describe("runStep", () => {
  it("returns next with the validated new state and the delay in ms", async () => {
    const result = await runStep(Checkout, "ship", {
      state: { order: 1 },
      awaited: [{ event: "paid", payload: { amount: 5 } }],
    });
    expect(result).toStrictEqual({
      type: "next",
      step: "followUp",
      state: { order: 1, notes: ['paid {"amount":5}'] },
      delay: 3_600_000,
    });
  });

  it("returns await with the spec as written and the timeout in ms; the input state goes through the schema", async () => {
    const result = await runStep(Checkout, "start", { state: { order: 2 } });
    // notes comes from the schema's default: the step saw the validated state, as the engine would give it.
    expect(result).toStrictEqual({
      type: "await",
      spec: "paid",
      step: "ship",
      state: { order: 2, notes: [] },
      timeout: 86_400_000,
      onTimeout: "expire",
    });
    expect(await runStep(Misc, "start", { state: { n: 7 } })).toStrictEqual({
      type: "await",
      spec: { all: ["a", "b"] },
      step: "start",
      state: { n: 7 },
    });
  });

  it("returns spawn with every child validated as the engine would insert it", async () => {
    const result = await runStep(Fanout, "start", { state: { n: 1 } });
    expect(result).toStrictEqual({
      type: "spawn",
      step: "join",
      state: { n: 1 },
      children: [
        { machine: "Email", args: { to: "a@example.com" }, queue: "th", priority: 0, correlationKey: "mail:a" },
        { machine: "Checkout", state: { order: 7, notes: [] }, queue: "th", priority: 3, delay: 300_000 },
      ],
    });
  });

  it("gives a join step its children and returns done", async () => {
    const children = [
      { machine: Email, status: "done" as const, result: { sent: "a" } },
      { machine: "Checkout", status: "cancelled" as const, error: new Error("never paid") },
    ];
    expect(await runStep(Fanout, "join", { state: { n: 1 }, children })).toStrictEqual({
      type: "done",
      result: ["Email:done", "Checkout:cancelled"],
    });
  });

  it("passes the context facts through", async () => {
    const insertedAt = new Date("2024-05-06T07:08:09.000Z");
    const result = await runStep(Misc, "facts", {
      state: { n: 0 },
      id: "42",
      attempt: 3,
      correlationKey: "order:42",
      insertedAt,
      awaited: [{ event: "paid", payload: { at: new Date(0).toISOString() }, insertedAt }],
      children: [{ machine: Email, status: "failed", error: { name: "Error", message: "bounced" }, id: "43" }],
    });
    expect(result).toStrictEqual({
      type: "done",
      result: {
        id: "42",
        attempt: 3,
        key: "order:42",
        at: insertedAt.toISOString(),
        awaited: [
          { id: "1", event: "paid", payload: { at: "1970-01-01T00:00:00.000Z" }, insertedAt: insertedAt.toISOString() },
        ],
        children: [
          { id: "43", machine: "Email", status: "failed", result: null, error: { name: "Error", message: "bounced" } },
        ],
      },
    });
  });

  it("returns a job's return value as done, and snooze, cancel and next with runAt and priority", async () => {
    expect(await runStep(Email, "perform", { args: { to: "b@example.com" } })).toStrictEqual({
      type: "done",
      result: { sent: "b@example.com" },
    });
    expect(await runStep(Misc, "start", { state: { n: 1 } })).toStrictEqual({ type: "snooze", delay: 30_000 });
    expect(await runStep(Misc, "start", { state: { n: 2 } })).toStrictEqual({
      type: "cancel",
      reason: 'cancelled by step "start" of machine "Misc"',
    });
    expect(await runStep(Checkout, "expire", { state: { order: 9 } })).toStrictEqual({
      type: "cancel",
      reason: "order 9 was never paid",
    });
    expect(await runStep(Misc, "start", { state: { n: 6 } })).toStrictEqual({
      type: "next",
      step: "start",
      state: { n: 6 },
      runAt: new Date("2030-01-01T00:00:00Z"),
      priority: -2,
    });
  });

  it("returns a thrown error with the record, whether it will be retried, and the backoff", async () => {
    const first = errorOf(await runStep(Misc, "start", { state: { n: 0 } }));
    expect(first.error).toBeInstanceOf(Error);
    expect(first).toMatchObject({
      record: { name: "Error", message: "n=0 on attempt 1" },
      willRetry: true,
      retryDelay: 600_000,
    });
    const last = errorOf(await runStep(Misc, "start", { state: { n: 0 }, attempt: 3 }));
    expect(last.willRetry).toBe(false);
    expect(last).not.toHaveProperty("retryDelay");
  });

  it("reports a step timeout as the engine's StepTimeoutError", async () => {
    const result = errorOf(await runStep(Misc, "slow", { state: { n: 0 } }));
    expect(result.error).toBeInstanceOf(StepTimeoutError);
    expect(result.record.message).toBe('step "slow" of machine "Misc" ran longer than its timeout of 50 ms');
  });

  it("gives an invalid outcome or new state exactly the error the engine records", async () => {
    for (const n of [3, 4, 5]) {
      const result = errorOf(await runStep(Misc, "start", { state: { n }, attempt: 3 }));
      expect(result.error).toBeInstanceOf(ValidationError);
      const { id } = await engine.insert(Misc, { state: { n }, maxAttempts: 1 });
      await drain(engine);
      const recorded = await engine.get(id);
      expect(recorded?.status).toBe("failed");
      const { stack: _ours, ...ours } = result.record as { stack?: string };
      const { stack: _theirs, ...theirs } = recorded!.error as { stack?: string };
      expect(ours).toEqual(theirs);
      expect(ours).toHaveProperty("message");
    }
    expect(errorOf(await runStep(Misc, "start", { state: { n: 3 } })).record.message).toMatch(
      /^the new state from step "start" of machine "Misc" is invalid: n: /,
    );
  });

  it("runs a transactional step in the caller's transaction; a failed attempt's writes are rolled back", async () => {
    const client = await db.pool.connect();
    try {
      await client.query("begin");
      expect(await runStep(Ledger, "start", { state: { note: "kept", fail: false }, client })).toStrictEqual({
        type: "done",
        result: { wrote: "kept" },
      });
      const failed = errorOf(await runStep(Ledger, "start", { state: { note: "dropped", fail: true }, client }));
      expect(failed.record.message).toBe("after the write");
      // The transaction is still usable, and holds the successful attempt's write only.
      expect((await client.query(`select note from ${ledger}`)).rows).toEqual([{ note: "kept" }]);
      await client.query("rollback");
      expect((await client.query(`select count(*)::int as n from ${ledger}`)).rows[0].n).toBe(0);
    } finally {
      client.release();
    }
    const noClient = errorOf(await runStep(Ledger, "start", { state: { note: "x", fail: false } }));
    expect(noClient.record.message).toMatch(/used ctx\.client, but runStep got no client: pass \{ client \}/);
  });

  it("types step names, input and the returned state from the machine", async () => {
    // @ts-expect-error "shipp" is not a step of Checkout
    await expect(runStep(Checkout, "shipp", { state: { order: 1 } })).rejects.toThrow(ValidationError);
    // @ts-expect-error a job takes args
    await expect(runStep(Email, "perform", { state: { to: "x" } })).rejects.toThrow(ValidationError);
    const result = await runStep(Checkout, "start", { state: { order: 3 } });
    if (result.type !== "await") throw new Error(`expected an await, got ${result.type}`);
    const order: number = result.state.order;
    const next: "start" | "ship" | "followUp" | "expire" = result.step;
    expect([order, next]).toEqual([3, "ship"]);
  });

  it("rejects bad input with an error naming what was wrong", async () => {
    const bad = async (call: () => Promise<unknown>, message: RegExp) => {
      const error = await call().then(
        () => null,
        (e: unknown) => e,
      );
      expect(error).toBeInstanceOf(ValidationError);
      expect((error as Error).message).toMatch(message);
    };
    await bad(
      () => runStep({} as never, "start" as never, { state: {} } as never),
      /first argument must be a machine from defineMachine or defineJob/,
    );
    await bad(
      () => runStep(Checkout, "shipp" as never, { state: { order: 1 } }),
      /machine "Checkout" has no step "shipp" \(did you mean "ship"\?\); its steps: start, ship, followUp, expire/,
    );
    await bad(
      () => runStep(Checkout, "ship", { state: { order: 1 }, atempt: 2 } as never),
      /unknown option "atempt" \(did you mean "attempt"\?\)/,
    );
    await bad(
      () => runStep(Checkout, "ship", { state: { order: "one" } } as never),
      /^runStep: state of Checkout is invalid: order: /,
    );
    await bad(
      () => runStep(Email, "perform", { state: { to: "x" } } as never),
      /Email is a job: pass \{ args \}, not \{ state \}/,
    );
    await bad(
      () => runStep(Checkout, "ship", { args: { order: 1 } } as never),
      /Checkout is a machine: pass \{ state \}, not \{ args \}/,
    );
    await bad(
      () => runStep(Misc, "start", { state: { n: 0 }, attempt: 4 }),
      /attempt must be an integer from 1 to the step's maxAttempts \(3\), got 4/,
    );
    await bad(
      () => runStep(Fanout, "join", { state: { n: 1 }, children: [{ machine: Email, status: "running" as never }] }),
      /children\[0\]\.status must be "done", "failed" or "cancelled"/,
    );
    await bad(
      () => runStep(Checkout, "ship", { state: { order: 1 }, awaited: [{ event: "" }] }),
      /awaited\[0\]\.event must be a non-empty string/,
    );
    await bad(
      () => runStep(Checkout, "ship", { state: { order: 1 }, awaited: [{ event: "paid", payload: () => 1 }] }),
      /awaited\[0\]\.payload/,
    );
    const client = await db.pool.connect();
    try {
      await bad(
        () => runStep(Checkout, "ship", { state: { order: 1 }, client }),
        /step "ship" of machine "Checkout" is not transactional/,
      );
      await bad(
        () => runStep(Ledger, "start", { state: { note: "x", fail: false }, client }),
        /client must be inside a transaction/,
      );
    } finally {
      client.release();
    }
  });
});

describe("drain", () => {
  it("runs everything due until idle and counts what ran", async () => {
    const { id } = await engine.insert(Fanout, { state: { n: 1 } });
    const result = await drain(engine);
    // Fanout start, Email, Checkout not yet (delayed 5m), so the parent still joins.
    expect(result).toEqual({ steps: 2, errors: 0, done: 1, failed: 0, cancelled: 0 });
    expect((await engine.get(id))?.status).toBe("joining");
    await advanceTime(engine, "5m");
    // The child Checkout parks on its await; a day later it times out, is cancelled, and the parent joins.
    expect(await drain(engine)).toEqual({ steps: 1, errors: 0, done: 0, failed: 0, cancelled: 0 });
    await advanceTime(engine, "1d");
    expect(await drain(engine)).toEqual({ steps: 2, errors: 0, done: 1, failed: 0, cancelled: 1 });
    expect((await engine.get(id))?.result).toEqual(["Email:done", "Checkout:cancelled"]);
  });

  it("completes a delayed next step after advanceTime, without waiting", async () => {
    const { id } = await engine.insert(Checkout, { state: { order: 10 }, correlationKey: "order:10" });
    await drain(engine);
    await engine.signal("order:10", "paid", { amount: 3 });
    await drain(engine);
    const waiting = await engine.get(id);
    expect(waiting).toMatchObject({ status: "runnable", step: "followUp" });
    // Due in an hour, by the database clock.
    const { rows } = await db.pool.query(
      `select extract(epoch from run_at - now()) as s from ${db.schema}.instances where id = $1`,
      [id],
    );
    expect(Number(rows[0].s)).toBeGreaterThan(3500);
    expect((await advanceAndDrain("59m")).steps).toBe(0);
    expect(await advanceAndDrain("1m")).toMatchObject({ steps: 1, done: 1 });
    expect((await engine.get(id))?.result).toEqual({ order: 10, notes: ['paid {"amount":3}'] });
  });

  it("runs an await's onTimeout step once its timeout has passed", async () => {
    const { id } = await engine.insert(Checkout, { state: { order: 11 } });
    await drain(engine);
    expect((await engine.get(id))?.status).toBe("awaiting");
    await advanceTime(engine, "23h");
    await drain(engine);
    expect((await engine.get(id))?.status).toBe("awaiting");
    await advanceTime(engine, "1h");
    expect(await drain(engine)).toMatchObject({ steps: 1, cancelled: 1 });
    expect(await engine.get(id)).toMatchObject({
      status: "cancelled",
      step: "expire",
      error: { message: "order 11 was never paid" },
    });
    expect((await engine.history(id)).map((h) => h.outcome)).toEqual(["await", "timeout", "cancelled"]);
  });

  it("retries with backoff as time is advanced", async () => {
    flakyRuns = 0;
    const { id } = await engine.insert(Flaky, { args: { failures: 2 } });
    expect(await drain(engine)).toMatchObject({ steps: 1, errors: 1 });
    // Backoff 1m after attempt 1, 2m after attempt 2 (exponential, no jitter).
    // Short of the backoff by more than a loaded machine's drain takes in real time.
    expect((await advanceAndDrain("45s")).steps).toBe(0);
    expect(await advanceAndDrain("15s")).toMatchObject({ steps: 1, errors: 1 });
    expect(await advanceAndDrain("2m")).toMatchObject({ steps: 1, errors: 0, done: 1 });
    expect(flakyRuns).toBe(3);
    expect(await engine.get(id)).toMatchObject({ status: "done", result: { attempt: 3 } });
  });

  it("hands a dead node's step to this engine once its lease has expired", async () => {
    const { id } = await engine.insert(Email, { args: { to: "c@example.com" }, delay: "1h" });
    // A node claimed it and died: running, leased by someone else, lease 30 s from now.
    await db.pool.query(
      `update ${db.schema}.instances set status = 'running', attempt = 1, claim_token = claim_token + 1, leased_by = 'dead-node',
         lease_expires_at = now() + interval '30 seconds' where id = $1`,
      [id],
    );
    expect((await drain(engine)).steps).toBe(0);
    await advanceTime(engine, "31s");
    expect(await drain(engine)).toMatchObject({ steps: 1, done: 1 });
    expect((await engine.history(id)).map((h) => [h.outcome, h.attempt])).toEqual([
      ["lease_expired", 1],
      ["done", 2],
    ]);
  });

  it("lets the reaper expire inbox signals and the GC prune past retention", async () => {
    await engine.signal("nobody:yet", "hello", null, { ifMissing: "keep" });
    const inbox = () =>
      db.pool
        .query(`select count(*)::int as n from ${db.schema}.signals where correlation_key = 'nobody:yet'`)
        .then((r) => r.rows[0].n);
    expect(await inbox()).toBe(1);
    await advanceTime(engine, "1d");
    await drain(engine);
    expect(await inbox()).toBe(0);

    const { id } = await engine.insert(Pruned, { args: {} });
    await drain(engine);
    expect((await engine.get(id))?.status).toBe("done");
    await advanceTime(engine, "59m");
    await drain(engine);
    expect(await engine.get(id)).not.toBeNull();
    await advanceTime(engine, "1m");
    await drain(engine);
    expect(await engine.get(id)).toBeNull();
  });

  it("rejects with what is still pending when the engine does not get idle in time", async () => {
    const { id } = await engine.insert(Blocker, { args: {} });
    const error = await drain(engine, { timeout: 300 }).then(
      () => null,
      (e: unknown) => e,
    );
    expect(error).toBeInstanceOf(DrainTimeoutError);
    expect((error as Error).message).toMatch(/^drain: not idle after 300 ms: .*1 steps still running on this engine/);
    release();
    expect(await drain(engine)).toMatchObject({ steps: 1, done: 1 });
    expect((await engine.get(id))?.result).toBe("released");
  });

  it("rejects bad input", async () => {
    await expect(drain({} as never)).rejects.toThrow(
      /drain: the first argument must be a GenDurable engine, got an object/,
    );
    await expect(drain(engine, { timout: 5 } as never)).rejects.toThrow(
      /unknown option "timout" \(did you mean "timeout"\?\)/,
    );
    await expect(drain(engine, { timeout: "soon" })).rejects.toThrow(/drain: timeout must be a duration/);
    const client = db.engine({ machines: [Email] });
    await client.start();
    await expect(drain(client)).rejects.toThrow(
      /drain: the engine is not running: start\(\) it, with queues and machines/,
    );
  });
});

describe("advanceTime", () => {
  it("shifts stored times by exactly the duration, keeping infinity, and keeps keyed due times consistent", async () => {
    const client = db.engine({ machines: [Email, Checkout] });
    await client.start();
    const { id } = await client.insert(Email, { args: { to: "d@example.com" }, delay: "2h", concurrencyKey: "k:1" });
    const times = () =>
      db.pool
        .query(
          `select i.run_at, i.inserted_at, k.run_at as key_run_at from ${db.schema}.instances i
           join ${db.schema}.concurrency_keys k on k.key = i.concurrency_key where i.id = $1`,
          [id],
        )
        .then((r) => r.rows[0] as { run_at: Date; inserted_at: Date; key_run_at: Date });
    const before = await times();
    await advanceTime({ pool: db.pool, schema: db.schema }, "90m");
    const after = await times();
    expect(before.run_at.getTime() - after.run_at.getTime()).toBe(90 * 60_000);
    expect(before.inserted_at.getTime() - after.inserted_at.getTime()).toBe(90 * 60_000);
    // Recomputed by its trigger from the shifted instance, not shifted a second time.
    expect(after.key_run_at.getTime()).toBe(after.run_at.getTime());

    await db.pool.query(`update ${db.schema}.instances set status = 'awaiting', run_at = 'infinity' where id = $1`, [
      id,
    ]);
    await advanceTime({ pool: db.pool, schema: db.schema }, "1d");
    const { rows } = await db.pool.query(`select run_at::text from ${db.schema}.instances where id = $1`, [id]);
    expect(rows[0].run_at).toBe("infinity");
    await client.cancel(id);
  });

  it("shifts rows whose time is part of a unique key without colliding", async () => {
    await db.pool.query(
      `insert into ${db.schema}.cron_ticks (name, tick_at, instance_id)
       select 'every-minute', date_trunc('minute', now()) - g * interval '1 minute', g from generate_series(0, 4) g`,
    );
    const read = () =>
      db.pool
        .query(`select tick_at from ${db.schema}.cron_ticks where name = 'every-minute' order by tick_at`)
        .then((r) => r.rows.map((x) => (x.tick_at as Date).getTime()));
    const before = await read();
    await advanceTime(engine, "1m");
    expect(await read()).toEqual(before.map((t) => t - 60_000));
  });

  it("covers every time column of the schema, and names only columns that exist", async () => {
    const { rows } = await db.pool.query<{ table: string; column: string }>(
      `select table_name as table, column_name as column from information_schema.columns
       where table_schema = $1 and data_type in ('timestamp with time zone', 'timestamp without time zone', 'date')`,
      [db.schema],
    );
    const listed = [
      ...SHIFTED.flatMap((t) => t.columns.map((c) => `${t.table}.${c}`)),
      ...NOT_SHIFTED.map((n) => `${n.table}.${n.column}`),
    ];
    // A new time column must be shifted (or deliberately not): add it to SHIFTED or NOT_SHIFTED in src/testing/time.ts.
    expect(rows.map((r) => `${r.table}.${r.column}`).sort()).toEqual([...listed].sort());
  });

  it("rejects bad input", async () => {
    await expect(advanceTime(engine, -5)).rejects.toThrow(/advanceTime: duration must be a duration/);
    await expect(advanceTime(engine, "tomorrow")).rejects.toThrow(/advanceTime: duration must be a duration/);
    await expect(advanceTime({} as never, "1m")).rejects.toThrow(
      /advanceTime: target must be a GenDurable engine or \{ pool, schema\? \}, got an object/,
    );
    await expect(advanceTime({ pool: db.pool, shema: "x" } as never, "1m")).rejects.toThrow(
      /unknown option "shema" \(did you mean "schema"\?\)/,
    );
    await expect(advanceTime({ pool: db.pool, schema: "Bad Name" }, "1m")).rejects.toThrow(
      /advanceTime: schema must match/,
    );
    await expect(advanceTime({ pool: db.pool, schema: `${db.schema}_none` }, "1m")).rejects.toThrow(
      /has no gen-durable tables; is it migrated\?/,
    );
  });
});

describe("packaging", () => {
  it("exports gen-durable/testing from the build of src/testing", () => {
    const root = join(import.meta.dirname, "..", "..");
    const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8")) as {
      exports: Record<string, { types: string; import: string; default: string }>;
    };
    expect(pkg.exports["./testing"]).toEqual({
      types: "./dist/testing/index.d.ts",
      import: "./dist/testing/index.js",
      default: "./dist/testing/index.js",
    });
    const build = JSON.parse(readFileSync(join(root, "tsconfig.build.json"), "utf8")) as {
      include: string[];
      compilerOptions: { rootDir: string; outDir: string };
    };
    // rootDir src -> outDir dist: src/testing/index.ts is emitted as dist/testing/index.js.
    expect(build.compilerOptions).toMatchObject({ rootDir: "src", outDir: "dist" });
    expect(build.include).toContain("src");
    expect(readFileSync(join(root, "src", "testing", "index.ts"), "utf8")).toMatch(/export \{ runStep \}/);
  });
});
