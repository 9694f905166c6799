/**
 * A worker SIGKILLed in the middle of an onFailure step or an onCancel step: the step runs again
 * elsewhere once the lease expires (at least once, to its end), the compensated instance ends done
 * and the cancelled one ends cancelled, not failed and not stuck.
 */
import pg from "pg";
import { describe, expect, it } from "vitest";
import { eventually, useTestDatabase } from "../support/db.js";
import { forkChild, useChildren } from "../support/worker-process.js";
import { Cleaned, Compensated, routingLedgerSql, useRoutingLedger } from "./fixtures/routing-machines.js";

useChildren();
const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;

describe("a worker killed during an onFailure or onCancel step", () => {
  it("the step runs again elsewhere and the instance ends as routed", { timeout: 90_000 }, async () => {
    await db.pool.query(routingLedgerSql(db.schema));
    const ledgerPool = new pg.Pool({ connectionString: db.url, max: 2 });
    useRoutingLedger(ledgerPool, db.schema);
    const runs = async (id: string) =>
      (await db.pool.query<{ pid: number }>(`select pid from ${s}.routing_runs where instance_id = $1`, [id])).rows;

    const worker = forkChild(new URL("./fixtures/routing-worker.ts", import.meta.url), {
      name: "gd-routing-hang",
      env: { DATABASE_URL: db.url, GD_SCHEMA: db.schema, GD_HANG: "1", GD_LEASE: "1s", GD_REAPER: "200ms" },
    });
    // The client knows Cleaned: its cancel routes the instance to the onCancel step.
    const client = db.engine({ machines: [Compensated, Cleaned], poolSize: 2 });
    await client.start();
    try {
      await worker.waitFor("ready", 60_000);
      const compensated = await client.insert(Compensated, { state: {} });
      const cleaned = await client.insert(Cleaned, { state: {} });
      await eventually("awaiting", async () => (await client.get(cleaned.id))?.status === "awaiting", 30_000);
      await client.cancel(cleaned.id, "customer left");
      await eventually(
        "both steps started in the worker",
        async () => {
          return (await runs(compensated.id)).length === 1 && (await runs(cleaned.id)).length === 1;
        },
        30_000,
      );
      worker.process.kill("SIGKILL");
      await worker.exited;

      // A node in this process takes over after the lease: its copies of the steps do not hang.
      const rescuer = db.engine({
        queues: { routing: 4 },
        machines: [Compensated, Cleaned],
        leaseDuration: "1s",
        reaperInterval: "200ms",
      });
      await rescuer.start();
      const done = await rescuer.wait(compensated.id, { timeout: "30s" });
      expect(done.status).toBe("done");
      expect(done.result).toBe("refunded");
      const cancelled = await rescuer.wait(cleaned.id, { timeout: "30s" });
      expect(cancelled.status).toBe("cancelled");
      expect(cancelled.error?.message).toBe("customer left");
      for (const id of [compensated.id, cleaned.id]) {
        const pids = (await runs(id)).map((r) => r.pid);
        expect(pids).toHaveLength(2);
        expect(pids[1]).toBe(process.pid);
      }
      const history = (await client.history(cleaned.id)).map((t) => t.outcome);
      expect(history).toEqual(["await", "cancelling", "lease_expired", "cancelled"]);
    } finally {
      await ledgerPool.end();
    }
  });
});
