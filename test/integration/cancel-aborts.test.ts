// A cancel aborts the running steps it stops (ctx.abortSignal) on whichever node runs them, when it
// commits: at once on another node, not at that node's next lease renewal; in a caller's
// transaction only if that transaction commits.
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob } from "../../src/index.js";
import { cancelledClaims } from "../../src/runtime/cancel-notice.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { sideClient } from "../support/locks.js";

const db = await useTestDatabase(import.meta.url);

/** Per job name: how its attempts went ("1 aborted: <reason>", "1 ran"). */
const runs = new Map<string, string[]>();
const gates = new Map<string, () => void>();
const Gated = defineJob({
  name: "Gated",
  queue: "gated",
  args: z.object({ name: z.string() }),
  maxAttempts: 3,
  backoff: { type: "fixed", delay: 0 },
  perform: async (args, ctx) => {
    const aborted = new Promise<void>((resolve) => ctx.abortSignal.addEventListener("abort", () => resolve()));
    const released = new Promise<void>((resolve) => gates.set(args.name, resolve));
    await Promise.race([aborted, released]);
    const seen = runs.get(args.name) ?? [];
    runs.set(args.name, seen);
    if (ctx.abortSignal.aborted) {
      seen.push(`${ctx.attempt} aborted: ${(ctx.abortSignal.reason as Error).message}`);
      throw ctx.abortSignal.reason;
    }
    seen.push(`${ctx.attempt} ran`);
    return args.name;
  },
});

// The worker renews its leases every 100 s: an abort that comes sooner came from the cancel itself.
const worker = db.engine({ queues: { gated: 4 }, machines: [Gated], leaseDuration: "5m" });
await worker.start();
// Another node of the same deployment, running nothing: the cancels come from here.
const client = db.engine();
await client.start();

const started = (name: string) => eventually(`${name} started`, () => gates.has(name));
const outcomes = async (id: string) => (await client.history(id)).map((t) => `${t.outcome}:${t.toStep ?? ""}`);

describe("a cancel aborts the steps it stops", () => {
  it("on another node, as soon as it commits", async () => {
    const { id } = await client.insert(Gated, { args: { name: "remote" } });
    await started("remote");
    await client.cancel(id, "stop it");
    await eventually("the step saw its abort", () => runs.get("remote")?.length === 1);
    expect(runs.get("remote")).toEqual([`1 aborted: instance ${id} was cancelled`]);
    const end = await client.wait(id, { timeout: "20s" });
    expect(end.status).toBe("cancelled");
    expect(end.error?.message).toBe("stop it");
  });

  it("in a caller's transaction, once that commits", async () => {
    const { id } = await client.insert(Gated, { args: { name: "committed" } });
    await started("committed");
    const caller = await sideClient(db.url);
    await caller.query("begin");
    await client.cancel(id, "stop", { client: caller });
    // Nothing is aborted before the commit: the cancel may still be rolled back.
    expect(runs.get("committed")).toBeUndefined();
    await caller.query("commit");
    await eventually("the step saw its abort", () => runs.get("committed")?.length === 1);
    expect(runs.get("committed")).toEqual([`1 aborted: instance ${id} was cancelled`]);
    expect((await client.wait(id, { timeout: "20s" })).status).toBe("cancelled");
  });

  it("in a caller's transaction that rolls back, not at all: the step runs on and its outcome counts", async () => {
    // Run where the step runs, so that its own node's abort would be at once.
    const { id } = await worker.insert(Gated, { args: { name: "rolled back" } });
    await started("rolled back");
    const caller = await sideClient(db.url);
    const said: string[] = [];
    const off = worker.on("instance:cancelled", (e) => said.push(e.id));
    await caller.query("begin");
    await worker.cancel(id, "never mind", { client: caller });
    await caller.query("rollback");
    gates.get("rolled back")!();
    const end = await worker.wait(id, { timeout: "20s" });
    expect(end.status).toBe("done");
    expect(end.result).toBe("rolled back");
    expect(runs.get("rolled back")).toEqual(["1 ran"]);
    expect(await outcomes(id)).toEqual(["done:"]);
    off();
    expect(said).toEqual([]);
  });

  it("several cancels committed together abort each of their steps", async () => {
    const names = Array.from({ length: 4 }, (_, i) => `many-${i}`);
    const ids: string[] = [];
    for (const name of names) ids.push((await client.insert(Gated, { args: { name } })).id);
    for (const name of names) await started(name);
    const caller = await sideClient(db.url);
    await caller.query("begin");
    for (const id of ids) await client.cancel(id, "all of them", { client: caller });
    await caller.query("commit");
    await eventually("every step saw its abort", () => names.every((n) => runs.get(n)?.length === 1));
    for (const [i, name] of names.entries()) {
      expect(runs.get(name)).toEqual([`1 aborted: instance ${ids[i]} was cancelled`]);
    }
  });

  it("names 400 running descendants of 19 digits in notifications that each fit a payload", async () => {
    // A parent in a queue no node runs, and 400 children held "running" by a node that is not
    // there, their ids and tokens as long as a bigint's: what the cancel's notifications must carry.
    const s = db.schema;
    const parent = await client.insert(Gated, { args: { name: "parent" }, queue: "nobody" });
    await db.pool.query(`select setval(pg_get_serial_sequence('${s}.instances', 'id'), 9000000000000000000)`);
    const { rows } = await db.pool.query<{ id: string; claim_token: string }>(
      `insert into ${s}.instances (machine, step, state, queue, parent_id, status, claim_token, leased_by, lease_expires_at)
       select 'Gated', 'perform', '{"name": "child"}', 'nobody', $1, 'running', 9000000000000000000 + g, 'gone', now() + interval '1 hour'
       from generate_series(1, 400) g
       returning id::text, claim_token::text`,
      [parent.id],
    );
    const listener = await sideClient(db.url);
    const payloads: string[] = [];
    listener.on("notification", (n) => payloads.push(n.payload ?? ""));
    await listener.query(`listen "gen_durable_${s}"`);
    await client.cancel(parent.id, "the whole tree");
    const named = () => payloads.flatMap((p) => cancelledClaims(p) ?? []);
    await eventually("the children's claims were named", () => named().length >= rows.length);
    expect(named().sort((a, b) => a.id.localeCompare(b.id))).toEqual(
      rows.map((r) => ({ id: r.id, token: r.claim_token })).sort((a, b) => a.id.localeCompare(b.id)),
    );
    const notices = payloads.filter((p) => cancelledClaims(p) !== null);
    expect(notices.length).toBeGreaterThan(1);
    for (const p of notices) expect(Buffer.byteLength(p)).toBeLessThan(8000);
    expect((await client.get(parent.id))?.status).toBe("cancelled");
  });
});
