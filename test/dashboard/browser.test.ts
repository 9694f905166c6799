// End to end in a real Chromium: click through the dashboard while an engine runs in this process.
// Skipped only where /usr/bin/chromium is absent and CI is unset; under CI a missing browser fails.
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium, type Browser, type Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { eventually, useTestDatabase } from "../support/db.js";
import { Approval, Batch, chargeSwitch, MACHINES, Order, serveDashboard } from "./fixture.js";

const CHROMIUM = "/usr/bin/chromium";
const available = existsSync(CHROMIUM) || Boolean(process.env.CI);
if (!available) console.warn(`dashboard browser tests skipped: ${CHROMIUM} is absent (apt-get install -y chromium)`);
// The docs' pictures are taken here, and written over docs/images/ only when asked
// (npm run docs:screenshots): a test run leaves the working tree as it found it.
const UPDATE_SCREENSHOTS = Boolean(process.env.UPDATE_SCREENSHOTS);
const IMAGES = UPDATE_SCREENSHOTS
  ? fileURLToPath(new URL("../../docs/images/", import.meta.url))
  : join(mkdtempSync(join(tmpdir(), "gen-durable-screenshots-")), "/");

describe.skipIf(!available)("dashboard in Chromium", async () => {
  const db = await useTestDatabase(import.meta.url);
  const engine = db.engine({ queues: { orders: 4, approvals: 4 }, machines: MACHINES, pollInterval: 50 });
  let browser: Browser;
  let page: Page;
  let stops: Array<() => Promise<void>> = [];
  let url: string;
  let failedId: string;
  let awaitingId: string;

  const shot = async (name: string) => {
    mkdirSync(IMAGES, { recursive: true });
    await page.screenshot({ path: `${IMAGES}dashboard-${name}.png` });
  };

  beforeAll(async () => {
    await engine.start();
    chargeSwitch.broken = true;
    failedId = (await engine.insert(Order, { state: { sku: "SKU-42", poison: true } })).id;
    awaitingId = (await engine.insert(Approval, { state: { note: "refund over limit" }, correlationKey: "refund-7" }))
      .id;
    const batch = (await engine.insert(Batch, { state: { skus: ["book", "lamp", "mug"] } })).id;
    for (let i = 0; i < 5; i++) await engine.insert(Order, { state: { sku: `later-${i}` }, delay: "1h" });
    await engine.wait(failedId, { timeout: 10_000 });
    await engine.wait(batch, { timeout: 10_000 });
    await eventually("the approval awaits", async () => (await engine.get(awaitingId))?.status === "awaiting");
    const served = await serveDashboard({ pool: db.pool, schema: db.schema, liveIntervalMs: 200 });
    stops.push(served.stop);
    url = served.url;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ["--headless", "--no-sandbox", "--disable-background-networking"],
    });
    page = await browser.newPage({ viewport: { width: 1200, height: 820 } });
  });

  afterAll(async () => {
    chargeSwitch.broken = true;
    await browser?.close();
    for (const stop of stops) await stop();
    stops = [];
    if (!UPDATE_SCREENSHOTS) rmSync(IMAGES, { recursive: true, force: true });
  });

  it("overview → a failed instance → retry → it completes, seen live", async () => {
    await page.goto(`${url}/`);
    await expect.poll(() => page.locator("h1").first().textContent()).toContain("Overview");
    await shot("overview");
    await page.locator('tr[data-queue="orders"] a[href*="status=failed"]').click();
    await page.waitForURL(/\/instances\?.*status=failed/);
    await page.locator(`a[href$="/instances/${failedId}"]`).first().click();
    await page.waitForURL(new RegExp(`/instances/${failedId}$`));
    expect(await page.locator("[data-status]").getAttribute("data-status")).toBe("failed");
    expect(await page.locator("#history").textContent()).toContain("card declined for SKU-42");
    await shot("instance");
    chargeSwitch.broken = false;
    await page.locator("#retry-form button").click();
    await page.waitForURL(/ok=/);
    expect(await page.locator(".flash").textContent()).toContain("runnable again");
    // No reload: the live stream swaps the summary when the instance finishes.
    const loads: string[] = [];
    page.on("load", () => loads.push(page.url()));
    await page.locator('[data-status="done"]').waitFor({ timeout: 20_000 });
    expect(loads).toEqual([]);
    expect((await engine.get(failedId))?.status).toBe("done");
  });

  it("signal an awaiting instance from the form", async () => {
    await page.goto(`${url}/instances/${awaitingId}`);
    expect(await page.locator("#why .explain").textContent()).toContain('awaiting signals: "approve"');
    await page.locator('#signal-form input[name="event"]').fill("approve");
    await page.locator('#signal-form textarea[name="payload"]').fill('{"by":"ops"}');
    await page.locator("#signal-form button").click();
    await page.waitForURL(/ok=Signal/);
    await page.locator('[data-status="done"]').waitFor({ timeout: 20_000 });
    expect((await engine.get(awaitingId))?.result).toEqual({ by: { by: "ops" } });
  });

  it("bulk-cancel everything matching a filter, after a confirmation that states the count", async () => {
    await page.goto(`${url}/instances?machine=Order&status=runnable`);
    expect(await page.locator("tr[data-id]").count()).toBe(5);
    await page.locator('button[value="cancel-all"]').click();
    const heading = await page.locator("h1").innerText();
    expect(heading).toContain("Cancel 5 instances?");
    await shot("confirm");
    await page.locator("#confirm").click();
    await page.waitForURL(/ok=/);
    expect(await page.locator(".flash").textContent()).toContain("Cancelled 5 instances.");
    const live = await engine.list({ machine: "Order", status: "runnable" });
    expect(live).toEqual([]);
    expect((await engine.list({ machine: "Order", status: "cancelled" })).length).toBe(5);
  });

  it("the graph renders, laid out, with the current step highlighted", async () => {
    const { id } = await engine.insert(Approval, { state: { note: "second" } });
    await eventually("it awaits", async () => (await engine.get(id))?.status === "awaiting");
    const step = (await engine.get(id))!.step;
    await page.goto(`${url}/instances/${id}`);
    const current = page.locator("svg.machine-graph g.step.current");
    await current.waitFor();
    expect(await current.getAttribute("data-step")).toBe(step);
    const box = (await current.boundingBox())!;
    expect(box.width).toBeGreaterThan(20);
    expect(await page.locator("svg.machine-graph g.edge-await").count()).toBeGreaterThan(0);
    await page.goto(`${url}/machines/Order?window=1h&step=charge`);
    await page.locator("svg.machine-graph g.step.current").waitFor();
    expect(await page.locator("svg.machine-graph g.step").count()).toBeGreaterThanOrEqual(3);
    await shot("machine");
  });

  it("read-only mode shows no action anywhere", async () => {
    const readOnly = await serveDashboard({ pool: db.pool, schema: db.schema, readOnly: true });
    stops.push(readOnly.stop);
    const { id } = await engine.insert(Approval, { state: { note: "third" } });
    await eventually("it awaits", async () => (await engine.get(id))?.status === "awaiting");
    for (const path of ["/", "/instances", `/instances/${id}`, `/instances/${failedId}`, "/machines/Approval"]) {
      await page.goto(`${readOnly.url}${path}`);
      expect(await page.locator("form[method=post]").count()).toBe(0);
      expect(await page.locator("button", { hasText: /retry|cancel|signal/i }).count()).toBe(0);
      expect(await page.locator("input[type=checkbox]").count()).toBe(0);
      expect(await page.locator("header .badge").textContent()).toBe("read-only");
    }
  });
});
