// The dashboard's handler against real Postgres: pages, escaping, read-only, token, CSRF, base path, bulk, live, graph.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, useTestDatabase } from "../support/db.js";
import { cliInProcess } from "../support/cli.js";
import { ConfigError, createDashboard } from "../../src/index.js";
import { Approval, Batch, chargeSwitch, MACHINES, Order, serveDashboard } from "./fixture.js";

const db = await useTestDatabase(import.meta.url);
const engine = db.engine({ queues: { orders: 4, approvals: 4 }, machines: MACHINES, pollInterval: 50 });
await engine.start();

const SCRIPT = "<script>alert(1)</script>";
const IMG = '"><img src=x onerror=alert(2)>';
let failedId: string;
let awaitingId: string;
let evilId: string;
let batchId: string;

beforeAll(async () => {
  chargeSwitch.broken = true;
  failedId = (await engine.insert(Order, { state: { sku: "SKU-1", poison: true } })).id;
  awaitingId = (await engine.insert(Approval, { state: { note: "please" } })).id;
  evilId = (
    await engine.insert(Approval, {
      state: { note: SCRIPT, evil: IMG },
      correlationKey: `key${SCRIPT}`,
    })
  ).id;
  batchId = (await engine.insert(Batch, { state: { skus: ["a", "b"] } })).id;
  await engine.wait(failedId, { timeout: 10_000 });
  await engine.wait(batchId, { timeout: 10_000 });
  await eventually("both approvals await", async () =>
    (await Promise.all([engine.get(awaitingId), engine.get(evilId)])).every((i) => i?.status === "awaiting"),
  );
  await engine.signal({ id: evilId }, "note", { html: IMG });
});

const servers: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const stop of servers) await stop();
});

async function serve(options: Record<string, unknown> = {}) {
  const served = await serveDashboard({ pool: db.pool, schema: db.schema, liveIntervalMs: 100, ...options });
  servers.push(served.stop);
  return served;
}

/** The message a redirect after an action carries. */
const flashOf = (res: Response, kind: "ok" | "error") =>
  new URL(res.headers.get("location")!, "http://x").searchParams.get(kind) ?? "";

/** The page's CSRF token (every action form carries it). */
const csrfOf = (page: string) => /name="_csrf" value="([^"]+)"/.exec(page)![1]!;

async function post(url: string, form: Record<string, string | string[]>, headers: Record<string, string> = {}) {
  const body = new URLSearchParams();
  for (const [k, v] of Object.entries(form)) for (const value of Array.isArray(v) ? v : [v]) body.append(k, value);
  return fetch(url, {
    method: "POST",
    body,
    redirect: "manual",
    headers: { "content-type": "application/x-www-form-urlencoded", ...headers },
  });
}

describe("dashboard pages", () => {
  it("the overview shows each queue's counts, the nodes alive and the hour's chart", async () => {
    const { url } = await serve();
    const res = await fetch(`${url}/`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-security-policy")).toContain("script-src 'self'");
    const page = await res.text();
    expect(page).toMatch(/<tr data-queue="orders">[\s\S]*?<\/tr>/);
    const orders = /<tr data-queue="orders">([\s\S]*?)<\/tr>/.exec(page)![1]!;
    // One failed order, linked to the filtered list.
    expect(orders).toContain(`status=failed">1</a>`);
    const approvals = /<tr data-queue="approvals">([\s\S]*?)<\/tr>/.exec(page)![1]!;
    expect(approvals).toContain(`status=awaiting">2</a>`);
    expect(page).toContain("1 alive");
    expect(page).toMatch(/\d+ transitions, \d+ failed attempts in the last hour/);
  });

  it("a state holding <script> and an attribute breakout renders as text, never as markup", async () => {
    const { url } = await serve();
    for (const path of [`/instances/${evilId}`, `/instances?key=${encodeURIComponent(`key${SCRIPT}`)}`]) {
      const page = await (await fetch(`${url}${path}`)).text();
      expect(page).not.toContain("<script>alert");
      expect(page).not.toContain("<img src=x");
      expect(page).not.toContain("onerror=alert(2)>");
      expect(page).toContain("&lt;script&gt;alert(1)&lt;/script&gt;");
    }
    const page = await (await fetch(`${url}/instances/${evilId}`)).text();
    expect(page).toContain("&quot;&gt;&lt;img src=x onerror=alert(2)&gt;");
    // The only script element is the dashboard's own.
    expect(page.match(/<script/g)).toHaveLength(1);
  });

  it("an instance page shows its history with errors, explain in words, mailbox, family and graph", async () => {
    const { url } = await serve();
    const failed = await (await fetch(`${url}/instances/${failedId}`)).text();
    expect(failed).toContain("card declined for SKU-1");
    expect(failed).toContain("stack trace");
    expect(failed).toContain('id="retry-form"');
    expect(failed).toMatch(/class="step current" data-step="charge"/);
    const awaiting = await (await fetch(`${url}/instances/${awaitingId}`)).text();
    expect(awaiting).toContain("awaiting signals: &quot;approve&quot;");
    expect(awaiting).toContain('id="signal-form"');
    const evil = await (await fetch(`${url}/instances/${evilId}`)).text();
    expect(evil).toMatch(/<tr class="pending">[\s\S]*note/);
    // A signal kept for the key of a finished instance waits for the next one: shown with it.
    const kept = (await engine.insert(Order, { state: { sku: "kept", poison: true }, correlationKey: "kept-1" })).id;
    await engine.wait(kept, { timeout: 10_000 });
    await engine.signal("kept-1", "approve", { later: true }, { ifMissing: "keep" });
    const keptPage = await (await fetch(`${url}/instances/${kept}`)).text();
    expect(keptPage).toContain("Kept for correlation key kept-1");
    expect(keptPage).toContain("approve");
    const batch = await (await fetch(`${url}/instances/${batchId}`)).text();
    const children = await engine.list({ machine: "Order", limit: 10 });
    for (const child of children.filter((c) => c.parentId === batchId))
      expect(batch).toContain(`/instances/${child.id}"`);
  });

  it("the machine page draws recorded edges with counts, and exports Mermaid and SVG", async () => {
    const { url } = await serve();
    const page = await (await fetch(`${url}/machines/Order`)).text();
    expect(page).toContain('class="machine-graph"');
    expect(page).toMatch(/data-from="start" data-to="charge"/);
    const mermaid = await (await fetch(`${url}/machines/Order.mmd`)).text();
    expect(mermaid).toMatch(/^flowchart LR/);
    expect(mermaid).toMatch(/s\d+\["start"\]/);
    const svg = await fetch(`${url}/machines/Approval.svg?window=1h`);
    expect(svg.headers.get("content-type")).toContain("image/svg+xml");
    const text = await svg.text();
    expect(text).toContain("edge-await");
    // Given the definitions, declared steps that never ran are drawn too, dashed; the initial step is marked.
    const withDefinitions = await serve({ machines: MACHINES });
    const declared = await (await fetch(`${withDefinitions.url}/machines/Approval`)).text();
    expect(declared).toMatch(/class="step unrecorded" data-step="expired"/);
    expect(declared).toMatch(/class="step initial" data-step="start"/);
    expect(page).not.toContain('data-step="expired"');
    const cli = await cliInProcess(["graph", "Batch", "--schema", db.schema], { DATABASE_URL: db.url });
    expect(cli.code).toBe(0);
    expect(cli.stdout).toMatch(/==>\|"spawn · 1×/);
  });

  it("filters by insertion time (read as UTC); a bad filter or action is a 400 naming it", async () => {
    const { url } = await serve();
    const old = await (await fetch(`${url}/instances?from=2000-01-01T00:00&to=2000-01-02T00:00`)).text();
    expect(old).toContain("No instance matches.");
    expect(old).toContain("inserted from 2000-01-01T00:00:00.000Z, inserted before 2000-01-02T00:00:00.000Z");
    const recent = await (
      await fetch(`${url}/instances?from=${encodeURIComponent(new Date(Date.now() - 3600_000).toISOString())}`)
    ).text();
    expect(recent).toContain(`data-id="${failedId}"`);
    const badDate = await fetch(`${url}/instances?from=yesterday`);
    expect(badDate.status).toBe(400);
    expect(await badDate.text()).toContain("from is not a date: &quot;yesterday&quot;");
    const badStatus = await fetch(`${url}/instances?status=finished`);
    expect(badStatus.status).toBe(400);
    const csrf = csrfOf(await (await fetch(`${url}/instances`)).text());
    const badAction = await post(`${url}/actions/bulk`, { _csrf: csrf, action: "explode" });
    expect(badAction.status).toBe(400);
    expect(await badAction.text()).toContain("unknown bulk action");
  });

  it("paging walks the list with a keyset cursor", async () => {
    const { url } = await serve();
    const ids: string[] = [];
    let path = "/instances?machine=Order";
    const total = (await engine.list({ machine: "Order", limit: 100 })).length;
    // 50 a page: insert enough to need two.
    for (let i = 0; i < 55 - total; i++) await engine.insert(Order, { state: { sku: `page-${i}` }, delay: "1h" });
    for (let guard = 0; guard < 5 && path; guard++) {
      const page = await (await fetch(`${url}${path}`)).text();
      ids.push(...[...page.matchAll(/<tr data-id="(\d+)">/g)].map((m) => m[1]!));
      const next = /<a\s+rel="next"\s+href="([^"]+)"/.exec(page)?.[1]?.replace(/&amp;/g, "&");
      path = next ?? "";
    }
    expect(ids.length).toBeGreaterThanOrEqual(55);
    expect(new Set(ids).size).toBe(ids.length);
  });
});

describe("dashboard safety", () => {
  it("read-only hides every action and refuses every POST", async () => {
    const { url } = await serve({ readOnly: true });
    for (const path of ["/", "/instances", `/instances/${failedId}`, `/instances/${awaitingId}`, "/machines/Order"]) {
      const page = await (await fetch(`${url}${path}`)).text();
      expect(page).not.toMatch(/method="post"/i);
      expect(page).toContain("read-only");
    }
    const res = await post(`${url}/instances/${failedId}/retry`, { _csrf: "x" });
    expect(res.status).toBe(403);
    expect((await engine.get(failedId))?.status).toBe("failed");
  });

  it("with a token, every request needs it: Basic password, Bearer, or ?token= once (then a cookie)", async () => {
    const { url } = await serve({ token: "s3cret-token" });
    expect((await fetch(`${url}/`)).status).toBe(401);
    expect((await fetch(`${url}/`, { headers: { authorization: "Bearer wrong-token" } })).status).toBe(401);
    const basic = `Basic ${Buffer.from("ops:s3cret-token").toString("base64")}`;
    expect((await fetch(`${url}/`, { headers: { authorization: basic } })).status).toBe(200);
    expect((await fetch(`${url}/`, { headers: { authorization: "Bearer s3cret-token" } })).status).toBe(200);
    const first = await fetch(`${url}/?token=s3cret-token`);
    expect(first.status).toBe(200);
    const cookie = first.headers.get("set-cookie")!.split(";")[0]!;
    expect(cookie).toMatch(/^gen_durable_dashboard=/);
    expect((await fetch(`${url}/instances`, { headers: { cookie } })).status).toBe(200);
    expect((await post(`${url}/instances/${failedId}/retry`, {})).status).toBe(401);
  });

  it("an action needs the page's CSRF token and the same origin", async () => {
    const { url } = await serve();
    const page = await (await fetch(`${url}/instances/${awaitingId}`)).text();
    const csrf = csrfOf(page);
    const form = { _csrf: csrf, event: "nope", payload: "1" };
    expect((await post(`${url}/instances/${awaitingId}/signal`, { ...form, _csrf: "forged" })).status).toBe(403);
    expect((await post(`${url}/instances/${awaitingId}/signal`, form, { origin: "http://evil.example" })).status).toBe(
      403,
    );
    expect((await post(`${url}/instances/${awaitingId}/signal`, form, { "sec-fetch-site": "cross-site" })).status).toBe(
      403,
    );
    const sent = await post(`${url}/instances/${awaitingId}/signal`, form, { origin: url });
    expect(sent.status).toBe(303);
    expect(sent.headers.get("location")).toContain(`/instances/${awaitingId}?ok=Signal`);
    // Not the awaited event: the signal waits in the mailbox, the instance still awaits.
    expect((await engine.get(awaitingId))?.status).toBe("awaiting");
  });

  it("pause and resume a queue from the overview (engine.pauseQueue / resumeQueue)", async () => {
    const { url } = await serve();
    const csrf = csrfOf(await (await fetch(`${url}/`)).text());
    const paused = await post(`${url}/queues/approvals/pause`, { _csrf: csrf });
    expect(flashOf(paused, "ok")).toBe("Queue approvals is paused.");
    expect(await engine.pausedQueues()).toEqual(["approvals"]);
    const overview = await (await fetch(`${url}/`)).text();
    expect(/<tr data-queue="approvals">([\s\S]*?)<\/tr>/.exec(overview)![1]).toContain("Resume");
    await post(`${url}/queues/approvals/resume`, { _csrf: csrf });
    expect(await engine.pausedQueues()).toEqual([]);
  });

  it("a payload that is not JSON is refused with a message, and nothing is sent", async () => {
    const { url } = await serve();
    const csrf = csrfOf(await (await fetch(`${url}/instances/${awaitingId}`)).text());
    const res = await post(`${url}/instances/${awaitingId}/signal`, { _csrf: csrf, event: "approve", payload: "{x" });
    expect(flashOf(res, "error")).toContain("The payload is not valid JSON");
    expect((await engine.get(awaitingId))?.status).toBe("awaiting");
  });

  it("under a base path every link carries it, mounted with or without the prefix stripped", async () => {
    const { url, dashboard } = await serve({ basePath: "/ops/durable/" });
    expect(dashboard.basePath).toBe("/ops/durable");
    const page = await (await fetch(`${url}/ops/durable/instances`)).text();
    const links = [...page.matchAll(/(?:href|src|action)="([^"]+)"/g)].map((m) => m[1]!);
    expect(links.length).toBeGreaterThan(5);
    for (const l of links) expect(l.startsWith("/ops/durable/")).toBe(true);
    expect(page).toContain('data-live="/ops/durable/live?page=%2Finstances"');
    // A router that strips the prefix (Express's app.use) hands the rest.
    expect((await fetch(`${url}/instances/${failedId}`)).status).toBe(200);
    expect((await fetch(`${url}/ops/durable/assets/app.js`)).status).toBe(200);
  });

  it("gen-durable ui refuses to bind a non-loopback address without a token unless read-only", async () => {
    const run = await cliInProcess(["ui", "--host", "0.0.0.0", "--schema", db.schema], { DATABASE_URL: db.url });
    expect(run.code).toBe(2);
    expect(run.stderr).toContain("refusing to serve actions on 0.0.0.0 without a token");
  });
});

describe("bulk actions and live updates", () => {
  it("cancel all matching asks first, stating the count, then cancels exactly those", async () => {
    const { url } = await serve();
    const ids = await Promise.all(
      [1, 2, 3].map(
        async (i) =>
          (await engine.insert(Order, { state: { sku: `bulk-${i}` }, delay: "1h", correlationKey: `bulk-${i}` })).id,
      ),
    );
    const csrf = csrfOf(await (await fetch(`${url}/instances`)).text());
    // Scheduled runnable orders whose sku starts with bulk-: filter by their queue and status, and by time.
    const filter = { machine: "Order", status: "runnable", queue: "orders" };
    const matching = (await engine.list({ machine: "Order", status: "runnable", queue: "orders", limit: 1000 })).length;
    const ask = await post(`${url}/actions/bulk`, { _csrf: csrf, action: "cancel-all", ...filter });
    const confirm = await ask.text();
    expect(confirm).toContain(`data-count="${matching}"`);
    expect(confirm).toContain(`Cancel ${matching} instance`);
    expect((await engine.get(ids[0]!))?.status).toBe("runnable");
    const done = await post(`${url}/actions/bulk`, { _csrf: csrf, action: "cancel-all", ...filter, confirmed: "yes" });
    expect(done.status).toBe(303);
    expect(flashOf(done, "ok")).toBe(`Cancelled ${matching} instances.`);
    for (const id of ids) expect((await engine.get(id))?.status).toBe("cancelled");
  });

  it("retry of a selection goes through engine.retry (a non-failed one is refused, and said so)", async () => {
    const { url } = await serve();
    const csrf = csrfOf(await (await fetch(`${url}/instances`)).text());
    const ask = await (
      await post(`${url}/actions/bulk`, { _csrf: csrf, action: "retry", id: [failedId, awaitingId] })
    ).text();
    expect(ask).toContain('data-count="2"');
    chargeSwitch.broken = false;
    try {
      const res = await post(`${url}/actions/bulk`, {
        _csrf: csrf,
        action: "retry",
        id: [failedId, awaitingId],
        confirmed: "yes",
      });
      const message = flashOf(res, "ok");
      expect(message).toContain("Retried 1 instance; 1 refused");
      expect(message).toContain("only failed instances can be retried");
      expect((await engine.wait(failedId, { timeout: 10_000 })).status).toBe("done");
    } finally {
      chargeSwitch.broken = true;
    }
  });

  it("a live page streams the page again when it changes", async () => {
    const { url } = await serve();
    const { id } = await engine.insert(Approval, { state: { note: "live" } });
    await eventually("awaiting", async () => (await engine.get(id))?.status === "awaiting");
    const controller = new AbortController();
    const res = await fetch(`${url}/live?page=${encodeURIComponent(`/instances/${id}`)}`, {
      signal: controller.signal,
    });
    expect(res.headers.get("content-type")).toContain("text/event-stream");
    const reader = res.body!.getReader();
    let text = "";
    const read = async (until: (t: string) => boolean) => {
      while (!until(text)) {
        const { value, done } = await reader.read();
        if (done) throw new Error("stream ended");
        text += new TextDecoder().decode(value);
      }
    };
    await read((t) => t.includes('data-status=\\"awaiting\\"'));
    await engine.signal({ id }, "approve", "ops");
    await read((t) => t.includes('data-status=\\"done\\"'));
    controller.abort();
  });
});

describe("numeric options", () => {
  // A live page is re-read by a timer: beyond 2^31 - 1 ms Node fires it after 1 ms, re-reading
  // the database without pause; maxBulk + 1 is a SQL limit. Out-of-range values are refused.
  it.each([
    [
      "liveIntervalMs of 30 days",
      { liveIntervalMs: 30 * 86_400_000 },
      /liveIntervalMs must be .* from 100 to 86400000/,
    ],
    ["liveIntervalMs 0", { liveIntervalMs: 0 }, /liveIntervalMs must be/],
    ["liveIntervalMs NaN", { liveIntervalMs: Number.NaN }, /liveIntervalMs must be/],
    ["liveIntervalMs as a string", { liveIntervalMs: "2000" }, /liveIntervalMs must be/],
    ["a negative cacheMs", { cacheMs: -1 }, /cacheMs must be .* from 0 to 86400000/],
    ["cacheMs Infinity", { cacheMs: Infinity }, /cacheMs must be/],
    ["maxBulk 0", { maxBulk: 0 }, /maxBulk must be an integer from 1 to 1000000/],
    ["a fractional maxBulk", { maxBulk: 1.5 }, /maxBulk must be/],
    ["maxBulk 1e300", { maxBulk: 1e300 }, /maxBulk must be/],
  ])("refuses %s with a ConfigError, before opening a pool", (_what, options, message) => {
    const make = () => createDashboard({ connectionString: "postgres://u@127.0.0.1:1/x", ...options } as never);
    expect(make).toThrowError(ConfigError);
    expect(make).toThrowError(message);
  });
});
