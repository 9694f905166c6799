// `gen-durable ui` as a real process (binds, serves, stops on SIGTERM) and `gen-durable graph`.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { cliInProcess } from "../support/cli.js";
import { eventually, useTestDatabase } from "../support/db.js";
import { Approval, MACHINES } from "./fixture.js";

const db = await useTestDatabase(import.meta.url);
const engine = db.engine({ queues: { orders: 2, approvals: 2 }, machines: MACHINES, pollInterval: 50 });
await engine.start();
const root = fileURLToPath(new URL("../../", import.meta.url));
const children: Array<ReturnType<typeof spawn>> = [];
afterAll(() => {
  for (const child of children) if (child.exitCode === null) child.kill("SIGKILL");
});

/** Starts `gen-durable ui ...args` and resolves with the URL it prints and the process. */
async function startUi(args: string[], env: Record<string, string> = {}) {
  const child = spawn(process.execPath, ["--import", "tsx", "src/cli/main.ts", "ui", ...args], {
    cwd: root,
    env: { ...process.env, DATABASE_URL: db.url, ...env },
  });
  children.push(child);
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()));
  const exited = new Promise<number | null>((resolve) => child.on("exit", (code) => resolve(code)));
  const url = await eventually(
    `the dashboard's address on stdout (stderr: ${stderr})`,
    () => / on (http:\/\/\S+?)\/? \(/.exec(stdout)?.[1],
    60_000,
  );
  return { url, child, exited, output: () => stdout + stderr };
}

describe("gen-durable ui", () => {
  it("serves on 127.0.0.1 by default and stops cleanly on SIGTERM", async () => {
    const { url, child, exited, output } = await startUi(["--port", "0", "--schema", db.schema]);
    expect(url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
    const page = await fetch(`${url}/`);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain("Overview");
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(output()).toContain("Ctrl-C stops it");
  });

  it("with --token (or GEN_DURABLE_UI_TOKEN) and a base path, asks for the token", async () => {
    const { url, child, exited } = await startUi(["--port", "0", "--schema", db.schema, "--base-path", "/durable"], {
      GEN_DURABLE_UI_TOKEN: "token-from-env",
    });
    expect(url).toMatch(/\/durable$/);
    expect((await fetch(`${url}/`)).status).toBe(401);
    const auth = `Basic ${Buffer.from("me:token-from-env").toString("base64")}`;
    expect((await fetch(`${url}/instances`, { headers: { authorization: auth } })).status).toBe(200);
    child.kill("SIGTERM");
    expect(await exited).toBe(0);
  });

  it("refuses a wrong command line before connecting", async () => {
    const env = { DATABASE_URL: db.url };
    expect((await cliInProcess(["ui", "--port", "99999"], env)).stderr).toContain("--port must be an integer");
    expect((await cliInProcess(["ui", "--token", "short"], env)).stderr).toContain("at least 8 characters");
    const open = await cliInProcess(["ui", "--host", "0.0.0.0"], env);
    expect(open.code).toBe(2);
    expect(open.stderr).toContain("--read-only, or bind 127.0.0.1");
  });
});

describe("gen-durable graph", () => {
  it("prints the recorded graph as Mermaid or SVG, with the step asked for highlighted", async () => {
    const { id } = await engine.insert(Approval, { state: { note: "graph" } });
    await eventually("awaiting", async () => (await engine.get(id))?.status === "awaiting");
    const env = { DATABASE_URL: db.url };
    const mermaid = await cliInProcess(["graph", "Approval", "--schema", db.schema, "--step", "approved"], env);
    expect(mermaid.code).toBe(0);
    expect(mermaid.stdout).toMatch(/^flowchart LR\n/);
    expect(mermaid.stdout).toMatch(/s\d+\["start"\]/);
    expect(mermaid.stdout).toMatch(/-\.->\|"await · 1×/);
    expect(mermaid.stdout).toMatch(/class s\d+ current/);
    const svg = await cliInProcess(["graph", "Approval", "--schema", db.schema, "--format", "svg"], env);
    expect(svg.stdout).toMatch(/^<svg xmlns="http:\/\/www.w3.org\/2000\/svg"/);
    const none = await cliInProcess(["graph", "Nothing", "--schema", db.schema, "--window", "1h"], env);
    expect(none.code).toBe(0);
    expect(none.stderr).toContain("no transition of machine Nothing recorded in the last 1h");
    const bad = await cliInProcess(["graph", "Approval", "--window", "2w"], env);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain("--window must be one of 1h, 24h, 7d, 30d");
  });
});
