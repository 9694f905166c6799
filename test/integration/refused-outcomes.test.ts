// Outcomes the database would refuse, and thrown values that are not Errors: each fails its
// attempt at once with an error that says what happened. Before, the commit's rejection was only
// logged: the row stayed `running` until its lease expired (a minute here), its concurrency key
// stayed held, and the recorded error said "lost its worker".
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, defineMachine } from "../../src/index.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
// Long leases: a wedged row would outlive every wait below.
const engine = db.engine({ leaseDuration: "60s" });

const Thrower = defineJob({
  name: "Thrower",
  queue: "refused",
  args: z.object({ how: z.enum(["undefined", "null", "reject"]) }),
  maxAttempts: 1,
  perform: async (args) => {
    if (args.how === "undefined") throw undefined;
    if (args.how === "null") throw null;
    return Promise.reject();
  },
});

const Outcomes = defineMachine({
  name: "RefusedOutcomes",
  queue: "refused",
  state: z.object({ how: z.string(), refuse: z.boolean().optional() }),
  maxAttempts: 1,
  steps: {
    start: (ctx) => {
      switch (ctx.state.how) {
        case "huge delay":
          return ctx.next("later", ctx.state, { delay: "99999999999999d" });
        case "ancient runAt":
          return ctx.next("later", ctx.state, { runAt: new Date(-8.64e15) });
        case "NUL in cancel reason":
          return ctx.cancel("a\u0000b\ud800c");
        case "huge cancel reason":
          return ctx.cancel("x".repeat(5_000_000));
        case "trigger refuses":
          return ctx.next("later", { how: ctx.state.how, refuse: true });
        default:
          throw new Error(`unknown case ${ctx.state.how}`);
      }
    },
    later: (ctx) => ctx.done(ctx.state),
  },
});

const backoffCalls: number[] = [];
const BadBackoff = defineJob({
  name: "BadBackoff",
  queue: "refused",
  args: z.object({ how: z.enum(["throws", "huge"]) }),
  maxAttempts: 2,
  backoff: (attempt) => {
    backoffCalls.push(attempt);
    if (backoffCalls.length % 2 === 1) throw new Error("backoff exploded");
    return 1e300;
  },
  perform: async () => {
    throw new Error("always fails");
  },
});

const Nullable = defineMachine({
  name: "NullableState",
  queue: "refused",
  state: z.object({ n: z.number() }).nullable(),
  maxAttempts: 1,
  steps: {
    start: (ctx) => ctx.next("finish", null),
    finish: (ctx) => ctx.done({ state: ctx.state }),
  },
});

const worker = db.engine({
  queues: { refused: 4 },
  machines: [Thrower, Outcomes, BadBackoff, Nullable],
  leaseDuration: "60s",
});
await engine.start();
await worker.start();

describe("a step that throws something that is not an Error", () => {
  for (const how of ["undefined", "null", "reject"] as const) {
    it(`fails its attempt at once when it throws ${how}`, async () => {
      const { id } = await engine.insert(Thrower, { args: { how } });
      const done = await engine.wait(id, { timeout: 10_000 });
      expect(done.status).toBe("failed");
      expect(done.error?.message).toMatch(
        how === "null" ? /threw null instead of an Error/ : /threw undefined instead of an Error/,
      );
    });
  }
});

describe("an outcome the database would refuse", () => {
  it("stores a new state of null as JSON null (the column is not null)", async () => {
    const { id } = await engine.insert(Nullable, { state: { n: 1 } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("done");
    expect(done.result).toEqual({ state: null });
  });

  it("fails the attempt on a delay beyond what Postgres can store", async () => {
    const { id } = await engine.insert(Outcomes, { state: { how: "huge delay" } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("failed");
    expect(done.error?.message).toMatch(/delay/);
  });

  it("gives its concurrency key back at once: the key's next instance runs within the lease", async () => {
    const { id: refused } = await engine.insert(Outcomes, { state: { how: "huge delay" }, concurrencyKey: "refused" });
    const { id: next } = await engine.insert(Nullable, { state: { n: 2 }, concurrencyKey: "refused" });
    // A wedged first instance would hold the key until its 60 s lease expired.
    expect((await engine.wait(refused, { timeout: 10_000 })).status).toBe("failed");
    expect((await engine.wait(next, { timeout: 10_000 })).status).toBe("done");
  });

  it("fails the attempt on a runAt outside Postgres's range", async () => {
    const { id } = await engine.insert(Outcomes, { state: { how: "ancient runAt" } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("failed");
    expect(done.error?.message).toMatch(/runAt/);
  });

  it("stores a cancel reason with NUL and a lone surrogate, made storable", async () => {
    const { id } = await engine.insert(Outcomes, { state: { how: "NUL in cancel reason" } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("cancelled");
    expect(done.error?.message).toBe("a\\0b\ufffdc");
  });

  it("bounds a cancel reason like any error message", async () => {
    const { id } = await engine.insert(Outcomes, { state: { how: "huge cancel reason" } });
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("cancelled");
    expect(done.error!.message.length).toBeLessThanOrEqual(8 * 1024);
  });

  it("records a commit the database refuses as a failed attempt with the database's error", async () => {
    await db.pool.query(`
      create function ${s}.refuse_marked() returns trigger language plpgsql as $$
      begin
        if new.state->>'refuse' = 'true' then raise exception 'refused by the test trigger'; end if;
        return new;
      end $$;
      create trigger refuse_marked before update on ${s}.instances for each row execute function ${s}.refuse_marked();`);
    try {
      const { id } = await engine.insert(Outcomes, { state: { how: "trigger refuses" } });
      const done = await engine.wait(id, { timeout: 10_000 });
      expect(done.status).toBe("failed");
      expect(done.error?.message).toMatch(/the database refused the step's outcome: refused by the test trigger/);
      expect(done.state).toEqual({ how: "trigger refuses" });
    } finally {
      await db.pool.query(`drop trigger refuse_marked on ${s}.instances; drop function ${s}.refuse_marked()`);
    }
  });

  it("retries after the default backoff when the backoff function throws or returns an absurd delay", async () => {
    for (const how of ["throws", "huge"] as const) {
      const { id } = await engine.insert(BadBackoff, { args: { how } });
      const done = await engine.wait(id, { timeout: 15_000 });
      expect(done.status).toBe("failed");
      const history = await engine.history(id);
      expect(history.map((t) => t.outcome)).toEqual(["error", "failed"]);
      expect(history[0]!.error?.message).toMatch(
        /always fails \(the backoff function failed \(.+\); the default backoff was used\)/,
      );
    }
  });
});
