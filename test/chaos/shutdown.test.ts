/**
 * Graceful shutdown: a worker process gets SIGTERM with steps in
 * flight and calls engine.stop(). Steps that finish within shutdownGrace
 * commit; the rest are released at once (runnable, attempt not counted) and
 * another node runs them right away — not after their 60 s lease — and the
 * process exits 0.
 */
import { describe, expect, it } from "vitest";
import { eventually, useTestDatabase } from "../support/db.js";
import { forkChild, useChildren } from "../support/worker-process.js";
import { startHalfOpenProxy } from "./fixtures/half-open-proxy.js";
import { Quick, Slow } from "./fixtures/shutdown-machines.js";

useChildren();
const db = await useTestDatabase(import.meta.url);

const GRACE_MS = 1500;

describe("graceful shutdown on SIGTERM", () => {
  it(
    "commits what finishes within the grace and hands the rest to another node at once",
    { timeout: 120_000 },
    async () => {
      const worker = forkChild(new URL("./fixtures/shutdown-worker.ts", import.meta.url), {
        name: "gd-shutdown",
        env: { DATABASE_URL: db.url, GD_SCHEMA: db.schema, GD_GRACE: `${GRACE_MS}ms` },
      });
      await worker.waitFor("ready");
      const client = db.engine();
      await client.start();

      const quick = await client.insertMany(Array.from({ length: 4 }, () => ({ machine: Quick, state: { ms: 500 } })));
      const slow = await client.insertMany(Array.from({ length: 4 }, () => ({ machine: Slow, state: {} })));
      const all = [...quick, ...slow].map((r) => r.id);
      // All eight are running in the worker.
      await eventually("the worker to start all eight steps", () =>
        all.every((id) => worker.messages.some((m) => m.type === "step-start" && m.id === id)),
      );

      // The other node is up before the signal; it finds nothing to claim until the release.
      const other = db.engine({ queues: { shutdown: 8 }, machines: [Quick, Slow], nodeId: "other" });
      const startedAt = new Map<string, number>();
      other.on("step:start", ({ id }) => void (startedAt.has(id) || startedAt.set(id, Date.now())));
      await other.start();

      const sigterm = Date.now();
      worker.process.kill("SIGTERM");
      const exit = await worker.exited;
      expect(exit, worker.output()).toEqual({ code: 0, signal: null });
      const stopped = worker.messages.find((m) => m.type === "stopped");
      expect(stopped).toBeDefined();

      for (const id of all) expect((await client.wait(id, { timeout: 20_000 })).status).toBe("done");

      // Quick steps finished within the grace: committed by the worker, on their first attempt.
      for (const { id } of quick) {
        expect((await client.get(id))?.result).toEqual({ pid: worker.pid, attempt: 1 });
        expect(startedAt.has(id)).toBe(false);
      }
      // Slow steps were released: run by the other node with the attempt not counted, soon after the grace.
      const delays = slow.map(({ id }) => startedAt.get(id)! - sigterm);
      console.log(
        `SIGTERM -> other node's step:start: ${delays.join(", ")} ms (grace ${GRACE_MS} ms, worker stop took ${String(stopped?.ms)} ms)`,
      );
      for (const { id } of slow) {
        expect((await client.get(id))?.result).toEqual({ pid: process.pid, attempt: 1 });
        const history = await client.history(id);
        expect(history.map((t) => t.outcome)).toEqual(["done"]);
      }
      for (const delay of delays) {
        // Not before the grace ran out (they were still running), and within a second of it
        // (generous on a loaded box: the lease is 60 s, so reaping would take a minute).
        expect(delay).toBeGreaterThanOrEqual(GRACE_MS);
        expect(delay).toBeLessThan(GRACE_MS + 2500);
      }
      expect(worker.messages.filter((m) => m.type === "fatal" || m.type === "engine-error")).toEqual([]);
      // Nothing is left leased to the stopped worker.
      const { rows } = await db.pool.query(`select id from "${db.schema}".instances where leased_by = 'gd-shutdown'`);
      expect(rows).toEqual([]);
      // Later cases need the queue to themselves.
      await other.stop();
    },
  );

  it("stop() is quick when nothing is running and the process exits 0", { timeout: 60_000 }, async () => {
    const worker = forkChild(new URL("./fixtures/shutdown-worker.ts", import.meta.url), {
      name: "gd-shutdown-idle",
      env: { DATABASE_URL: db.url, GD_SCHEMA: db.schema, GD_GRACE: "30s" },
    });
    await worker.waitFor("ready");
    worker.process.kill("SIGTERM");
    expect(await worker.exited).toEqual({ code: 0, signal: null });
    // With nothing in flight, the 30 s grace is not waited out.
    expect(Number(worker.messages.find((m) => m.type === "stopped")?.ms)).toBeLessThan(10_000);
  });

  it(
    "a SIGTERM while the database is unreachable still exits 0; the reaper recovers its steps",
    { timeout: 120_000 },
    async () => {
      // The worker reaches Postgres through a proxy that the test turns into "server down".
      const upstream = new URL(db.url);
      const proxy = await startHalfOpenProxy({ host: upstream.hostname, port: Number(upstream.port || 5432) });
      const viaProxy = new URL(db.url);
      viaProxy.hostname = "127.0.0.1";
      viaProxy.port = String(proxy.port);
      const other = db.engine({
        queues: { shutdown: 8 },
        machines: [Quick, Slow],
        nodeId: "other-2",
        reaperInterval: "200ms",
      });
      try {
        const worker = forkChild(new URL("./fixtures/shutdown-worker.ts", import.meta.url), {
          name: "gd-shutdown-cut",
          env: { DATABASE_URL: viaProxy.toString(), GD_SCHEMA: db.schema, GD_GRACE: "300ms", GD_LEASE: "2s" },
        });
        await worker.waitFor("ready");
        const client = db.engine();
        await client.start();
        const slow = await client.insertMany(Array.from({ length: 3 }, () => ({ machine: Slow, state: {} })));
        await eventually("the worker to start the steps", () =>
          slow.every(({ id }) => worker.messages.some((m) => m.type === "step-start" && m.id === id)),
        );

        proxy.refuse();
        worker.process.kill("SIGTERM");
        expect(await worker.exited, worker.output()).toEqual({ code: 0, signal: null });
        // The release could not be written: reported, not thrown.
        expect(worker.messages.some((m) => m.type === "engine-error" && m.loop === "stop")).toBe(true);
        expect(worker.messages.filter((m) => m.type === "fatal")).toEqual([]);

        // Their leases expire (2 s) and another node runs them.
        await other.start();
        for (const { id } of slow) {
          const done = await client.wait(id, { timeout: 30_000 });
          expect(done.result).toEqual({ pid: process.pid, attempt: 2 });
          expect((await client.history(id)).map((t) => t.outcome)).toEqual(["lease_expired", "done"]);
        }
      } finally {
        await proxy.close();
      }
    },
  );
});
