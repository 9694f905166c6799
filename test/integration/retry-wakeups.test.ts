// engine.retry locks the instance and its ancestors; a claim that meets one of them runnable while
// it holds them skips it. The retry wakes those queues again, so such a row does not wait for a poll.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, InvalidStateError, type EngineEvents } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { outcome, sideClient, waitForLockWait } from "../support/locks.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

const Wake = defineJob({ name: "Wake", queue: "retry-wake", args: z.object({}), perform: () => "ran" });

const listenBackends = async () =>
  (
    await db.pool.query(
      `select pid from pg_stat_activity where application_name = 'gen-durable-listen' and query ilike $1`,
      [`%listen "gen_durable_${db.schema}"%`],
    )
  ).rows.map((r) => r.pid as number);

describe("retry wakes what it held", () => {
  it("a runnable ancestor skipped by a claim during a refused retry runs without waiting for the poll", async () => {
    // Written directly: a runnable root and a failed child of it (of an earlier spawn, so the retry
    // is refused after it has locked both).
    const insert = async (status: string, queue: string, parent: string | null) =>
      (
        await db.pool.query(
          `insert into ${s}.instances (machine, step, state, status, queue, run_at, parent_id)
           values ('Wake', 'perform', '{}', $1, $2, now(), $3) returning id::text as id`,
          [status, queue, parent],
        )
      ).rows[0]!.id as string;
    const root = await insert("runnable", Wake.queue, null);
    const child = await insert("failed", "retry-idle", root);

    // The child's row held elsewhere: the retry locks the root (first, in id order), then waits.
    const holder = await sideClient(db.url);
    await holder.query("begin");
    await holder.query(`select 1 from ${s}.instances where id = $1 for update`, [child]);
    const client = db.engine();
    await client.start();
    const retrying = outcome(client.retry(child));
    await waitForLockWait(db.pool, "the retry", [db.schema, "with recursive lineage"]);

    // A node polling once an hour starts now: its first claim meets the root locked and skips it.
    const node = db.engine({ queues: { [Wake.queue]: 1 }, machines: [Wake], pollInterval: "1h" });
    const claims: Array<EngineEvents["loop:tick"]> = [];
    node.on("loop:tick", (e) => e.loop === "scheduler" && claims.push(e));
    await node.start();
    await eventually("the node's first claim", () => claims.length > 0);
    await eventually("the node listening", async () => (await listenBackends()).length === 1);
    expect(claims[0]!.count).toBe(0);

    await holder.query("commit");
    const refused = await retrying;
    expect(refused.ok).toBe(false);
    expect((refused as { error: unknown }).error).toBeInstanceOf(InvalidStateError);
    expect((await node.wait(root, { timeout: 10_000 })).result).toBe("ran");
    await node.stop();
  });
});
