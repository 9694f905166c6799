/**
 * Hung steps. Step code cannot be killed, only abandoned; what the engine guarantees around it:
 * - a promise that never settles, without a timeout, holds one slot and nothing else: other work
 *   runs, a cancel ends it and frees the slot, a graceful stop does not wait for it past its grace;
 * - with a timeout, each attempt fails at the timeout and the instance runs out of attempts;
 * - a step that resolves after its timeout commits nothing: not its outcome, not its ctx.client
 *   writes (a later attempt's outcome stands);
 * - a worker process frozen inside a step (a synchronous busy loop, or SIGSTOP) stops renewing
 *   its leases; another node finishes the work after the lease lapses, and the frozen worker,
 *   once it runs again, cannot commit (its outcome is fenced off and reported lease:lost).
 *
 * RELIABILITY_FULL=1 freezes 10 instances per worker (default: 2).
 */
import { existsSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { GenDurable, defineMachine } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { forkChild, useChildren } from "../support/worker-process.js";
import { Freezer } from "./fixtures/frozen-machines.js";

const FROZEN = process.env.RELIABILITY_FULL ? 10 : 2;
const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
useChildren();
await db.pool.query(`create table ${s}.effects (instance_id bigint not null, attempt int not null)`);

const never = new Promise<never>(() => {});
const gates = new Map<string, () => void>();
const gate = (key: string) => new Promise<void>((resolve) => gates.set(key, resolve));
const late: Array<{ id: string; query: "refused" | "ran" }> = [];

const Hang = defineMachine({
  name: "Hang",
  queue: "hang",
  state: z.object({}),
  steps: { start: async () => await never },
});
const HangWithTimeout = defineMachine({
  name: "HangWithTimeout",
  queue: "hang",
  state: z.object({}),
  steps: { start: { timeout: "150ms", maxAttempts: 2, backoff: { type: "fixed", delay: "10ms" }, run: () => never } },
});
const SoloHang = defineMachine({
  name: "SoloHang",
  queue: "solo",
  state: z.object({}),
  steps: { start: async () => await never },
});
const Quick = defineMachine({
  name: "Quick",
  queue: "hang",
  state: z.object({}),
  steps: { start: (ctx) => ctx.done("quick") },
});
const Late = defineMachine({
  name: "Late",
  queue: "hang",
  state: z.object({}),
  steps: {
    start: {
      timeout: "150ms",
      backoff: { type: "fixed", delay: "10ms" },
      run: async (ctx) => {
        if (ctx.attempt === 1) {
          await gate(`late:${ctx.id}`);
          return ctx.next("late");
        }
        return ctx.done("second attempt");
      },
    },
    late: (ctx) => ctx.done("the late result committed"),
  },
});
const LateTransactional = defineMachine({
  name: "LateTransactional",
  queue: "hang",
  state: z.object({}),
  steps: {
    start: {
      timeout: "150ms",
      transactional: true,
      backoff: { type: "fixed", delay: "10ms" },
      run: async (ctx) => {
        if (ctx.attempt === 1) await gate(`late:${ctx.id}`);
        try {
          await ctx.client.query(`insert into ${s}.effects (instance_id, attempt) values ($1, $2)`, [
            ctx.id,
            ctx.attempt,
          ]);
          if (ctx.attempt === 1) late.push({ id: ctx.id, query: "ran" });
        } catch (error) {
          if (ctx.attempt === 1) late.push({ id: ctx.id, query: "refused" });
          throw error;
        }
        return ctx.done(`attempt ${ctx.attempt}`);
      },
    },
  },
});

const machines = [Hang, HangWithTimeout, Quick, Late, LateTransactional];
const worker = db.engine({ queues: { hang: 2 }, machines, leaseDuration: "60s" });
const lost: string[] = [];
worker.on("lease:lost", (e) => void lost.push(e.id));
await worker.start();

const figures: string[] = [];
afterAll(() => console.log(`hung steps:\n  ${figures.join("\n  ")}`));

const outcomes = async (id: string) => (await worker.history(id)).map((t) => `${t.fromStep}:${t.outcome}`);

describe("hung steps in one process", () => {
  it("a promise that never settles holds one slot; a cancel ends it and frees the slot", async () => {
    const hung = await worker.insert(Hang, { state: {} });
    await eventually("the hung step running", async () => (await worker.get(hung.id))?.status === "running");
    // The other slot still serves the queue.
    for (let i = 0; i < 3; i++) {
      const { id } = await worker.insert(Quick, { state: {} });
      expect((await worker.wait(id, { timeout: 10_000 })).result).toBe("quick");
    }
    await worker.cancel(hung.id, "hung");
    expect((await worker.wait(hung.id, { timeout: 10_000 })).status).toBe("cancelled");
    // Both slots free again: two hung steps run at once.
    const a = await worker.insert(Hang, { state: {} });
    const b = await worker.insert(Hang, { state: {} });
    await eventually("both running", async () =>
      [(await worker.get(a.id))?.status, (await worker.get(b.id))?.status].every((x) => x === "running"),
    );
    await worker.cancel(a.id);
    await worker.cancel(b.id);
    figures.push("never settles, no timeout: holds 1 of 2 slots; cancel frees it");
  });

  it("a graceful stop does not wait for a hung step past its grace: the row is released", async () => {
    const node = new GenDurable({
      connectionString: db.url,
      schema: db.schema,
      queues: { solo: 1 },
      machines: [SoloHang],
      shutdownGrace: "200ms",
      pollInterval: 200,
    });
    await node.start();
    const { id } = await worker.insert(SoloHang, { state: {} });
    await eventually("the hung step running", async () => (await worker.get(id))?.status === "running");
    await node.stop();
    const row = await worker.get(id);
    expect(row?.status).toBe("runnable");
    await worker.cancel(id);
    figures.push("never settles, graceful stop: stop returns after its grace, the row released");
  });

  it("with a timeout, a step that never settles fails each attempt and runs out of them", async () => {
    const { id } = await worker.insert(HangWithTimeout, { state: {} });
    const failed = await worker.wait(id, { timeout: 10_000 });
    expect(failed.status).toBe("failed");
    expect(failed.error?.name).toBe("StepTimeoutError");
    expect(await outcomes(id)).toEqual(["start:error", "start:failed"]);
    figures.push("never settles, timeout 150 ms, 2 attempts: failed with StepTimeoutError after 2 attempts");
  });

  it("a step that resolves after its timeout commits nothing: the next attempt's outcome stands", async () => {
    const { id } = await worker.insert(Late, { state: {} });
    expect((await worker.wait(id, { timeout: 10_000 })).result).toBe("second attempt");
    gates.get(`late:${id}`)!();
    // A later instance through the same node: whatever the late result caused has happened by then.
    const after = await worker.insert(Quick, { state: {} });
    await worker.wait(after.id, { timeout: 10_000 });
    const row = await worker.get(id);
    expect([row?.status, row?.result]).toEqual(["done", "second attempt"]);
    expect(await outcomes(id)).toEqual(["start:error", "start:done"]);
    figures.push("resolves after its timeout: late outcome discarded, history [error, done]");
  });

  it("a transactional step that goes on after its timeout cannot write through ctx.client", async () => {
    const { id } = await worker.insert(LateTransactional, { state: {} });
    expect((await worker.wait(id, { timeout: 10_000 })).result).toBe("attempt 2");
    gates.get(`late:${id}`)!();
    await eventually("the late attempt's query to settle", () => late.some((l) => l.id === id));
    expect(late.filter((l) => l.id === id)).toEqual([{ id, query: "refused" }]);
    const { rows } = await db.pool.query(`select attempt from ${s}.effects where instance_id = $1`, [id]);
    expect(rows.map((r) => r.attempt)).toEqual([2]);
    figures.push("transactional, resolves after its timeout: its ctx.client query refused, 0 late writes");
  });
});

describe("a worker process frozen inside a step", () => {
  const dir = mkdtempSync(join(tmpdir(), "gd-thaw-"));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  for (const mode of ["spin", "stop"] as const) {
    it(`${mode === "spin" ? "a synchronous busy loop" : "SIGSTOP"}: another node finishes, the frozen worker cannot commit`, async () => {
      const thaw = join(dir, `thaw-${mode}`);
      const frozen = forkChild(new URL("./fixtures/frozen-worker.ts", import.meta.url), {
        name: `frozen-${mode}`,
        env: {
          DATABASE_URL: db.url,
          GD_SCHEMA: db.schema,
          GD_LEASE: "1s",
          GD_FREEZE: "1",
          GD_THAW_FILE: thaw,
        },
      });
      await frozen.waitFor("ready");
      const ids: string[] = [];
      for (let i = 0; i < FROZEN; i++) ids.push((await worker.insert(Freezer, { state: { mode } })).id);
      // The frozen worker takes them (2 slots): wait until it has started each one it can (a busy
      // loop blocks its whole process: one).
      const expected = mode === "spin" ? 1 : Math.min(2, FROZEN);
      await eventually("the frozen worker to start its steps", () => {
        if (!frozen.alive()) throw new Error(`the worker exited: ${frozen.output()}`);
        return frozen.messages.filter((m) => m.type === "started").length >= expected;
      }).catch((error: Error) => {
        throw new Error(`${error.message}\nmessages: ${JSON.stringify(frozen.messages)}\n${frozen.output()}`);
      });
      const startedThere = frozen.messages.filter((m) => m.type === "started").map((m) => m.id as string);
      if (mode === "stop") frozen.process.kill("SIGSTOP");
      // A node that does not freeze: the lapsed leases come back to it through its reaper.
      const rescuer = db.engine({
        queues: { frozen: 4 },
        machines: [Freezer],
        leaseDuration: "1s",
        reaperInterval: "200ms",
      });
      const began = performance.now();
      await rescuer.start();
      for (const id of ids) {
        const done = await worker.wait(id, { timeout: 20_000 });
        expect(done.result).toBe("finished by the test");
      }
      const takeover = Math.round(performance.now() - began);
      // Thaw: the frozen worker's steps return now, their outcomes fenced off.
      if (mode === "stop") frozen.process.kill("SIGCONT");
      writeFileSync(thaw, "");
      frozen.send({ type: "thaw" });
      await eventually("the frozen worker to report its outcomes lost", () =>
        startedThere.every((id) => frozen.messages.some((m) => m.type === "lease-lost" && m.id === id)),
      );
      for (const id of ids) {
        const row = await worker.get(id);
        expect(row?.result).toBe("finished by the test");
        const history = await outcomes(id);
        expect(history.filter((h) => h.endsWith(":done"))).toEqual(["start:done"]);
      }
      expect(frozen.messages.filter((m) => m.type === "step-stop")).toEqual([]);
      expect(frozen.alive()).toBe(true);
      expect(existsSync(thaw)).toBe(true);
      await rescuer.stop();
      frozen.process.kill("SIGKILL");
      await frozen.exited;
      figures.push(
        `frozen worker (${mode}), lease 1 s: ${ids.length} instances finished by another node in ${takeover} ms; ` +
          `${startedThere.length} late outcomes fenced (lease:lost), 0 committed`,
      );
    });
  }
});
