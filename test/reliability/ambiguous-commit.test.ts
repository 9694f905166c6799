/**
 * Ambiguous commits: the connection breaks right after a commit reached Postgres, so the engine
 * sees an error for a write that is in the database (a proxy, test/support/commit-cutter.ts,
 * withholds the server's reply to the statement and closes the connection). The engine must
 * re-read and continue: never apply a step's outcome twice, never report it lost, and never leave
 * the instance waiting for a poll on a commit it already made (the poll is an hour here, so only
 * the engine's own wake-ups move work along). Inserts too: the caller gets an error or the id,
 * and a retry with the same correlationKey finds the row instead of creating a second one. And
 * the other side: a connection that breaks before a step's code ran releases the row, which then
 * runs once.
 *
 * RELIABILITY_FULL=1 repeats every case 20 times (default: twice).
 */
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { GenDurable, WaitTimeoutError, defineMachine, type EngineEvents } from "../../src/index.js";
import { childQueries } from "../../src/sql/children.js";
import { claimQueries } from "../../src/sql/claims.js";
import { instanceQueries } from "../../src/sql/instances.js";
import { signalQueries } from "../../src/sql/signals.js";
import { startCommitCutter, type Statement } from "../support/commit-cutter.js";
import { eventually, useTestDatabase } from "../support/db.js";

const ROUNDS = process.env.RELIABILITY_FULL ? 20 : 2;
const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
await db.pool.query(`create table ${s}.effects (instance_id bigint not null, step text not null)`);

const runs = new Map<string, number>();
const ran = (id: string, step: string) => runs.set(`${id}:${step}`, (runs.get(`${id}:${step}`) ?? 0) + 1);
const runsOf = (id: string, step: string) => runs.get(`${id}:${step}`) ?? 0;

const State = z.object({ n: z.number() });
const Plain = defineMachine({
  name: "AmbiguousPlain",
  queue: "amb",
  state: State,
  steps: {
    start: (ctx) => (ran(ctx.id, "start"), ctx.next("second", { n: ctx.state.n + 1 })),
    second: (ctx) => (ran(ctx.id, "second"), ctx.done(ctx.state.n)),
  },
});
const Awaits = defineMachine({
  name: "AmbiguousAwait",
  queue: "amb",
  state: State,
  steps: {
    start: (ctx) => (ran(ctx.id, "start"), ctx.await("go", "finish")),
    finish: (ctx) => (ran(ctx.id, "finish"), ctx.done(ctx.awaited.length)),
  },
});
/** Parks only once the test opens its gate, so a signal can be in its mailbox before its await commits. */
const opened = new Map<string, () => void>();
const entered = new Map<string, () => void>();
const GatedAwait = defineMachine({
  name: "AmbiguousGatedAwait",
  queue: "amb",
  state: State,
  steps: {
    start: async (ctx) => {
      ran(ctx.id, "start");
      await new Promise<void>((resolve) => {
        opened.set(ctx.id, resolve);
        entered.get(ctx.id)?.();
      });
      return ctx.await("go", "finish");
    },
    finish: (ctx) => (ran(ctx.id, "finish"), ctx.done(ctx.awaited.length)),
  },
});
const Child = defineMachine({
  name: "AmbiguousChild",
  queue: "amb",
  state: State,
  steps: { start: (ctx) => (ran(ctx.id, "child"), ctx.done(ctx.state.n)) },
});
const Spawns = defineMachine({
  name: "AmbiguousSpawn",
  queue: "amb",
  state: State,
  steps: {
    start: (ctx) => {
      ran(ctx.id, "start");
      return ctx.spawn(
        [0, 1, 2].map((n) => ({ machine: Child, state: { n } })),
        "join",
      );
    },
    join: (ctx) => (ran(ctx.id, "join"), ctx.done(ctx.children.length)),
  },
});
const Transactional = defineMachine({
  name: "AmbiguousTransactional",
  queue: "amb",
  state: State,
  steps: {
    start: {
      transactional: true,
      run: async (ctx) => {
        ran(ctx.id, "start");
        await ctx.client.query(`insert into ${s}.effects (instance_id, step) values ($1, 'start')`, [ctx.id]);
        return ctx.next("second", ctx.state);
      },
    },
    second: (ctx) => (ran(ctx.id, "second"), ctx.done(ctx.state.n)),
  },
});

/** Runs until the database counts its attempt: for a row claimed ahead, until its start mark lands. */
const Ahead = defineMachine({
  name: "AmbiguousAhead",
  queue: "ahead",
  state: State,
  steps: {
    start: async (ctx) => {
      ran(ctx.id, "start");
      await eventually(`attempt of ${ctx.id} counted`, async () => {
        const { rows } = await db.pool.query<{ attempt: number; claimed_ahead: boolean }>(
          `select attempt, claimed_ahead from ${s}.instances where id = $1`,
          [ctx.id],
        );
        return rows[0]!.attempt === 1 && !rows[0]!.claimed_ahead;
      });
      return ctx.done(ctx.state.n);
    },
  },
});

const upstream = new URL(db.url);
const cutter = await startCommitCutter({ host: upstream.hostname, port: Number(upstream.port || 5432) });
const machines = [Plain, Awaits, GatedAwait, Child, Spawns, Transactional];
// An hour's poll: an instance left waiting on a commit already made would stay put and fail the wait below.
const worker = new GenDurable({
  connectionString: cutter.url(db.url),
  schema: db.schema,
  queues: { amb: 4 },
  machines,
  pollInterval: "1h",
  leaseDuration: "60s",
});
const client = db.engine();
const events: Array<{ name: string; id?: string; error?: string }> = [];
for (const name of ["lease:lost", "step:released", "engine:error"] as const) {
  worker.on(name, (e: EngineEvents[typeof name]) =>
    events.push({
      name,
      id: (e as { id?: string; step?: { id: string } }).id ?? (e as { step?: { id: string } }).step?.id,
      ...("error" in e ? { error: String(e.error) } : {}),
    }),
  );
}
await worker.start();
await client.start();
afterAll(async () => {
  await worker.stop();
  await cutter.close();
});

// The engine's own statements, matched exactly (sql/claims.ts, sql/children.ts, sql/instances.ts).
const claimsSql = claimQueries(db.schema);
/**
 * The group commit's statement (sql/claims.ts `complete`, or `completeReleasingKeys` for a batch
 * with keyed outcomes), a transaction of its own.
 */
const isGroupCommit = (st: Statement) =>
  !st.inBlock && (st.sql === claimsSql.complete.text || st.sql === claimsSql.completeReleasingKeys.text);
/** The COMMIT of a step's transaction, which writes its outcome with `complete`. */
const inStepTransaction = (st: Statement) =>
  st.sql.trim().toLowerCase() === "commit" && st.transaction.some((q) => q === claimsSql.complete.text);

const figures: string[] = [];
afterAll(() => {
  console.log(
    `ambiguous commits (${ROUNDS} rounds each), ${cutter.cuts.length} connections cut:\n  ${figures.join("\n  ")}`,
  );
});

async function history(id: string): Promise<string[]> {
  return (await client.history(id)).map((t) => t.outcome);
}

/**
 * Waits for the instance to finish. If it does not, the error says where it stands: its row, its
 * children, its history and the worker's events (a timeout alone told nothing of why).
 */
async function finished(id: string) {
  try {
    return await client.wait(id, { timeout: 15_000 });
  } catch (error) {
    if (!(error instanceof WaitTimeoutError)) throw error;
    const { rows } = await db.pool.query(
      `select id, status, step, attempt, claimed_ahead, joined, children_pending, leased_by, claim_token::text,
              round(extract(epoch from lease_expires_at - now()) * 1000) as lease_left_ms,
              round(extract(epoch from run_at - now()) * 1000) as due_in_ms
       from ${s}.instances where id = $1 or parent_id = $1 order by id`,
      [id],
    );
    const seen = events.filter((e) => e.id === id || e.name === "engine:error");
    throw new Error(
      `${error.message}. Its row and its children: ${JSON.stringify(rows)}; its history: ${(await history(id)).join(", ")}; ` +
        `the worker's events: ${JSON.stringify(seen)}`,
      { cause: error },
    );
  }
}

describe("ambiguous commits", () => {
  it("the group commit's reply is lost: the outcome counts once and the instance moves on", async () => {
    const started = performance.now();
    for (let round = 0; round < ROUNDS; round++) {
      const cut = cutter.cut(isGroupCommit);
      const { id } = await client.insert(Plain, { state: { n: round } });
      await cut;
      const done = await finished(id);
      expect(done.result).toBe(round + 1);
      expect([runsOf(id, "start"), runsOf(id, "second")]).toEqual([1, 1]);
      expect(await history(id)).toEqual(["next", "done"]);
      expect(events.filter((e) => e.id === id && e.name === "lease:lost")).toEqual([]);
    }
    figures.push(
      `group commit: ${ROUNDS} cut, every instance done, 0 re-run, ${Math.round(performance.now() - started)} ms`,
    );
  });

  it("an await's commit reply is lost: it stays parked, once, and resumes on its signal", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const cut = cutter.cut(inStepTransaction);
      const { id } = await client.insert(Awaits, { state: { n: round } });
      await cut;
      await eventually(`instance ${id} awaiting`, async () => (await client.get(id))?.status === "awaiting");
      await client.signal({ id }, "go");
      expect((await finished(id)).result).toBe(1);
      expect([runsOf(id, "start"), runsOf(id, "finish")]).toEqual([1, 1]);
      expect(await history(id)).toEqual(["await", "resumed", "done"]);
      expect(events.filter((e) => e.id === id && e.name === "lease:lost")).toEqual([]);
    }
    figures.push(`await: ${ROUNDS} cut, each parked once and resumed`);
  });

  it("an await satisfied by its mailbox in the commit whose reply is lost: it resumes without the poll", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const { id } = await client.insert(GatedAwait, { state: { n: round } });
      await new Promise<void>((resolve) => (opened.has(id) ? resolve() : entered.set(id, resolve)));
      await client.signal({ id }, "go");
      const cut = cutter.cut(inStepTransaction);
      opened.get(id)!();
      await cut;
      expect((await finished(id)).result).toBe(1);
      expect([runsOf(id, "start"), runsOf(id, "finish")]).toEqual([1, 1]);
      expect(events.filter((e) => e.id === id && e.name === "lease:lost")).toEqual([]);
    }
    figures.push(`await resumed in the lost commit: ${ROUNDS} cut, each resumed once`);
  });

  it("a spawn's commit reply is lost: its children exist once and the join runs once", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const cut = cutter.cut(inStepTransaction);
      const { id } = await client.insert(Spawns, { state: { n: round } });
      await cut;
      expect((await finished(id)).result).toBe(3);
      const { rows } = await db.pool.query(`select count(*)::int as n from ${s}.instances where parent_id = $1`, [id]);
      expect(rows[0].n).toBe(3);
      expect([runsOf(id, "start"), runsOf(id, "join")]).toEqual([1, 1]);
      expect(events.filter((e) => e.id === id && e.name === "lease:lost")).toEqual([]);
    }
    figures.push(`spawn: ${ROUNDS} cut, 3 children each, join once`);
  });

  it("a transactional step's COMMIT reply is lost: its writes count once and it is not recorded as failed", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const cut = cutter.cut(inStepTransaction);
      const { id } = await client.insert(Transactional, { state: { n: round } });
      await cut;
      expect((await finished(id)).result).toBe(round);
      const { rows } = await db.pool.query(`select count(*)::int as n from ${s}.effects where instance_id = $1`, [id]);
      expect(rows[0].n).toBe(1);
      expect(runsOf(id, "start")).toBe(1);
      expect(await history(id)).toEqual(["next", "done"]);
      expect(events.filter((e) => e.id === id && e.name === "lease:lost")).toEqual([]);
    }
    figures.push(`transactional: ${ROUNDS} cut, effect once, no failed attempt`);
  });

  it("an insert's reply is lost: a retry with its correlationKey finds the row, never a second one", async () => {
    const direct = new GenDurable({ connectionString: cutter.url(db.url), schema: db.schema });
    await direct.start();
    try {
      let errors = 0;
      for (let round = 0; round < ROUNDS; round++) {
        const key = `ambiguous-insert-${round}`;
        // The insert's own statement, or the COMMIT of the transaction it runs in.
        const isInsert = (sql: string) => sql === instanceQueries(db.schema).insert.text;
        const cut = cutter.cut((st) =>
          st.sql.trim().toLowerCase() === "commit" ? st.transaction.some(isInsert) : isInsert(st.sql) && !st.inBlock,
        );
        // A queue no node runs: the first stays live, for the retry to meet as its live twin (in
        // Child's own queue a worker of this file, woken by the insert's commit, could finish it
        // first, and a finished twin does not stop a new instance).
        const options = { state: { n: round }, correlationKey: key, queue: "ambiguous-idle" };
        const first = await direct.insert(Child, options).then(
          (r) => r,
          (error: unknown) => (errors++, error),
        );
        await cut;
        const again = await direct.insert(Child, options);
        if (!(first instanceof Error)) expect(again.id).toBe((first as { id: string }).id);
        expect(again.inserted).toBe(false);
        const { rows } = await db.pool.query(`select id::text from ${s}.instances where correlation_key = $1`, [key]);
        expect(rows.map((r) => r.id)).toEqual([again.id]);
      }
      figures.push(`insert: ${ROUNDS} cut, ${errors} reported an error to the caller, 0 duplicates after retry`);
    } finally {
      await direct.stop();
    }
  });

  it("the start mark of a row claimed ahead is cut (its reply lost): it is repeated, the step runs once, counted once", async () => {
    // One slot: of rows inserted together, the node runs one and claims the next ahead, uncharged.
    // A step taken from that buffer runs at once; as it is still running a moment later, a
    // statement of its own (the start mark) counts its attempt. Ahead's step runs until then.
    const node = new GenDurable({
      connectionString: cutter.url(db.url),
      schema: db.schema,
      queues: { ahead: 1 },
      machines: [Ahead],
      pollInterval: "1h",
      leaseDuration: "60s",
    });
    const lost: string[] = [];
    node.on("lease:lost", (e) => void lost.push(e.id));
    await node.start();
    try {
      for (let round = 0; round < ROUNDS; round++) {
        const cut = cutter.cut((st) => st.sql === claimsSql.start.text);
        const ids = (await client.insertMany([0, 1, 2].map((n) => ({ machine: Ahead, state: { n } })))).map(
          (r) => r.id,
        );
        await cut;
        for (const [n, id] of ids.entries()) {
          const done = await finished(id);
          expect(done.result).toBe(n);
          expect(done.attempt).toBe(1);
          expect(runsOf(id, "start")).toBe(1);
          expect((await client.history(id)).map((t) => t.outcome)).toEqual(["done"]);
        }
      }
      expect(lost).toEqual([]);
      figures.push(`start mark of a row claimed ahead: ${ROUNDS} cut, each repeated, every step run once`);
    } finally {
      await node.stop();
    }
  });

  it("a signal's reply is lost: a retry with its dedupKey is a duplicate, the await consumes one", async () => {
    const direct = new GenDurable({ connectionString: cutter.url(db.url), schema: db.schema });
    await direct.start();
    // One statement, committed on its own: its reply lost is the ambiguous commit. A signal sent
    // while none is in flight goes alone (deliver_signal); one sent while another is in flight goes
    // in a batch (deliver_signals). Rounds alternate: in odd ones a signal to a second instance is
    // sent first and is in flight.
    const { deliver, deliverMany } = signalQueries(db.schema);
    try {
      let errors = 0;
      for (let round = 0; round < ROUNDS; round++) {
        const batched = round % 2 === 1;
        const [{ id }, other] = await Promise.all([
          client.insert(Awaits, { state: { n: round } }),
          client.insert(Awaits, { state: { n: -round } }),
        ]);
        for (const i of [id, other.id])
          await eventually(`instance ${i} awaiting`, async () => (await client.get(i))?.status === "awaiting");
        const text = batched ? deliverMany.text : deliver.text;
        const cut = cutter.cut((st) => st.sql === text && !st.inBlock);
        const before = batched ? direct.signal({ id: other.id }, "go", {}) : undefined;
        const first = await direct.signal({ id }, "go", { round }, { dedupKey: `go-${round}` }).then(
          (r) => r,
          (error: unknown) => (errors++, error),
        );
        await cut;
        await before;
        const again = await direct.signal({ id }, "go", { round }, { dedupKey: `go-${round}` });
        if (first instanceof Error) expect(again.duplicate).toBe(true);
        expect((await finished(id)).result).toBe(1);
        const { rows } = await db.pool.query(`select count(*)::int as n from ${s}.signals where instance_id = $1`, [
          id,
        ]);
        expect(rows[0].n).toBe(1);
        expect(runsOf(id, "finish")).toBe(1);
      }
      figures.push(`signal: ${ROUNDS} cut, ${errors} reported an error, each retry a duplicate, one signal consumed`);
    } finally {
      await direct.stop();
    }
  });

  it("a connection that breaks before a step's code ran releases the row, which then runs once", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      // The join step's ctx.children is read before its code runs: that read never reaches the server.
      const cut = cutter.cut((st) => st.sql === childQueries(db.schema).children.text, {
        mode: "before-send",
      });
      const { id } = await client.insert(Spawns, { state: { n: round } });
      await cut;
      expect((await finished(id)).result).toBe(3);
      expect(runsOf(id, "join")).toBe(1);
      expect(events.filter((e) => e.id === id && e.name === "step:released").length).toBe(1);
    }
    figures.push(`broken before the code ran: ${ROUNDS} released, each join ran once`);
  });
});
