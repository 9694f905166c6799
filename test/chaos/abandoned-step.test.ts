/**
 * The mechanism behind a failure of sigkill.test.ts under heavy CPU load
 * (test_effects held 2 rows for an (instance, step3) whose history had one
 * step3 transition): an attempt the engine gives up on — its timeout fired or
 * its lease was lost — keeps running (a promise cannot be killed). Whatever it
 * does later must not count. The contract: database writes made through
 * ctx.client in a transactional step commit in the same transaction as the
 * checkpoint, so they happen exactly once; an instance never runs two steps at
 * the same time.
 *
 * Every case is deterministic: step bodies park on gates (one per instance and
 * attempt) that the test opens only once the engine has moved on.
 */
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine, type GenDurable } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
await db.pool.query(
  `create table "${db.schema}".abandoned_effects (instance_id bigint not null, attempt integer not null)`,
);

interface Gate {
  open: () => void;
  opened: Promise<void>;
  /** Set when the body reached the gate. */
  reached: boolean;
  /** What became of the write the body made after the gate opened. */
  write?: Promise<"done" | "rejected">;
}
const gates = new Map<string, Gate>();
function gate(id: string, attempt: number): Gate {
  const key = `${id}#${attempt}`;
  let entry = gates.get(key);
  if (!entry) {
    let open!: () => void;
    const opened = new Promise<void>((resolve) => (open = resolve));
    entry = { open, opened, reached: false };
    gates.set(key, entry);
  }
  return entry;
}
// Never leave a step parked (engine.stop() waits for steps in flight).
afterAll(() => {
  for (const g of gates.values()) g.open();
});

/** Parks on the gate of (id, attempt) when `parked` says so, then writes through ctx.client. */
function body(parked: (attempt: number) => boolean) {
  return async (ctx: {
    id: string;
    attempt: number;
    client: { query: (sql: string, values: unknown[]) => Promise<unknown> };
  }) => {
    const g = gate(ctx.id, ctx.attempt);
    if (parked(ctx.attempt)) {
      g.reached = true;
      await g.opened;
    }
    g.write = ctx.client
      .query(`insert into "${db.schema}".abandoned_effects values ($1, $2)`, [ctx.id, ctx.attempt])
      .then(
        () => "done" as const,
        () => "rejected" as const,
      );
    await g.write;
  };
}

const TimesOut = defineMachine({
  name: "AbandonedByTimeout",
  state: z.object({}),
  steps: {
    start: {
      transactional: true,
      timeout: "300ms",
      maxAttempts: 1,
      run: async (ctx) => {
        await body((attempt) => attempt === 1)(ctx);
        return ctx.done();
      },
    },
  },
});

const FirstAttemptParks = defineMachine({
  name: "AbandonedByLostLease",
  state: z.object({}),
  steps: {
    start: {
      transactional: true,
      run: async (ctx) => {
        await body((attempt) => attempt === 1)(ctx);
        return ctx.done();
      },
    },
  },
});

const EveryAttemptParks = defineMachine({
  name: "ReclaimedBySameNode",
  state: z.object({}),
  steps: {
    start: {
      transactional: true,
      run: async (ctx) => {
        await body(() => true)(ctx);
        return ctx.done();
      },
    },
  },
});

async function effects(id: string): Promise<number[]> {
  const { rows } = await db.pool.query<{ attempt: number }>(
    `select attempt from "${db.schema}".abandoned_effects where instance_id = $1 order by attempt`,
    [id],
  );
  return rows.map((r) => r.attempt);
}

/** What a stalled node sees: its claim superseded (token bumped) and the lease expired, so the reaper hands the step on. */
async function supersedeClaim(id: string): Promise<void> {
  await db.pool.query(
    `update "${db.schema}".instances set claim_token = claim_token + 1, lease_expires_at = now() - interval '1 second' where id = $1`,
    [id],
  );
}

async function running(engine: GenDurable, id: string, attempt: number): Promise<void> {
  await eventually(
    `attempt ${attempt} of ${id} parked`,
    async () => gate(id, attempt).reached && (await engine.get(id))?.status === "running",
    10_000,
  );
}

describe("an attempt the engine has given up on", () => {
  it("transactional step after its timeout fired: a later ctx.client write does not commit", async () => {
    const engine = db.engine({ poolSize: 4, queues: { default: 4 }, machines: [TimesOut], reaperInterval: 100 });
    await engine.start();
    const { id } = await engine.insert(TimesOut, { state: {} });
    const failed = await engine.wait(id, { timeout: 10_000 });
    expect(failed.status).toBe("failed");
    expect(failed.error?.name).toBe("StepTimeoutError");
    gate(id, 1).open();
    const late = await eventually("the abandoned attempt's write answered", () => gate(id, 1).write, 5_000);
    // The attempt failed and rolled back: nothing it wrote afterwards may exist.
    expect({ late, effects: await effects(id) }).toEqual({ late: "rejected", effects: [] });
  });

  it("transactional step after its lease was lost to another node: a later ctx.client write does not commit", async () => {
    // Node A (one slot) runs attempt 1, which parks; node B takes over once A's claim is gone.
    const a = db.engine({
      poolSize: 4,
      queues: { default: 1 },
      machines: [FirstAttemptParks],
      leaseDuration: "1s",
      reaperInterval: 100,
      nodeId: "node-a",
    });
    await a.start();
    const lost: string[] = [];
    a.on("lease:lost", (e) => lost.push(e.id));
    const { id } = await a.insert(FirstAttemptParks, { state: {} });
    await running(a, id, 1);
    const b = db.engine({
      poolSize: 4,
      queues: { default: 1 },
      machines: [FirstAttemptParks],
      leaseDuration: "1s",
      reaperInterval: 100,
      nodeId: "node-b",
    });
    await b.start();
    await supersedeClaim(id);
    // Attempt 2 runs on B (A's only slot is busy) and commits; A notices its lease is gone and abandons attempt 1.
    const done = await b.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("done");
    await eventually("node A gave up attempt 1 (lease:lost)", () => lost.includes(id), 10_000);
    gate(id, 1).open();
    const late = await eventually("the abandoned attempt's write answered", () => gate(id, 1).write, 5_000);
    // Exactly once: only the attempt that committed the checkpoint left its write.
    expect({ late, effects: await effects(id) }).toEqual({ late: "rejected", effects: [2] });
  });

  it("a node that gets its own instance back keeps renewing the new attempt's lease after the old attempt ends", async () => {
    // Lease 3 s: renewed every ~1 s. The claim is superseded right after a renewal, so the
    // reaper (every 50 ms) hands the step back to this node before its next renewal could
    // notice that attempt 1 lost its claim: attempts 1 and 2 then run side by side here.
    const engine = db.engine({
      poolSize: 4,
      queues: { default: 2 },
      machines: [EveryAttemptParks],
      leaseDuration: "3s",
      reaperInterval: 50,
    });
    await engine.start();
    const { id } = await engine.insert(EveryAttemptParks, { state: {} });
    await running(engine, id, 1);
    await new Promise<void>((resolve) => {
      const off = engine.on("loop:tick", (e) => {
        if (e.loop === "lease") {
          off();
          resolve();
        }
      });
    });
    await supersedeClaim(id);
    await running(engine, id, 2);
    const { rows } = await db.pool.query<{ token: string }>(
      `select claim_token::text as token from "${db.schema}".instances where id = $1`,
      [id],
    );
    const token2 = rows[0]!.token;
    // Attempt 1 ends (its outcome is fenced off). Attempt 2 still runs: its lease must still be renewed.
    gate(id, 1).open();
    await eventually("attempt 1 finished", () => gate(id, 1).write, 5_000);
    const { rows: now } = await db.pool.query<{ t: Date }>(`select now() as t`);
    await eventually(
      "attempt 2's lease renewed after attempt 1 ended",
      async () => {
        const { rows: r } = await db.pool.query<{ token: string; status: string; renewed: boolean }>(
          `select claim_token::text as token, status, lease_expires_at > $2::timestamptz + interval '3500 ms' as renewed from "${db.schema}".instances where id = $1`,
          [id, now[0]!.t],
        );
        if (r[0]!.token !== token2 || r[0]!.status !== "running") {
          throw new Error(
            `attempt 2 lost its claim while running (token ${token2} → ${r[0]!.token}, status ${r[0]!.status}): its lease was not renewed`,
          );
        }
        return r[0]!.renewed;
      },
      6_000,
    ).finally(() => gate(id, 2).open());
    const done = await engine.wait(id, { timeout: 10_000 });
    expect(done.status).toBe("done");
    // One lost lease (the one we forced), then done; nothing ran a third time.
    const history = await engine.history(id);
    expect(history.map((t) => [t.outcome, t.attempt])).toEqual([
      ["lease_expired", 1],
      ["done", 2],
    ]);
    expect(await effects(id)).toEqual([2]);
  });
});
