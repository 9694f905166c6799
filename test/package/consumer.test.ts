/**
 * The package as a consumer gets it: `npm pack`, the tarball installed into a fresh folder, a
 * strict TypeScript file compiled with `skipLibCheck: false` against the shipped types, and an
 * ES module and a CommonJS file (`require("gen-durable")`, Node.js >= 20.19) run against Postgres.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { databaseUrl } from "../support/db.js";
import { linkTargets, localFile } from "../support/markdown-links.js";

const run = promisify(execFile);
const root = fileURLToPath(new URL("../../", import.meta.url));
const npm = process.platform === "win32" ? "npm.cmd" : "npm";

/** What every consumer program does: migrate a schema of its own, run a machine to done, print its result. */
const program = (importLine: string, wrap: (body: string) => string) => `${importLine}
const schema = process.env.CONSUMER_SCHEMA;
const Echo = defineMachine({
  name: "Echo",
  state: {
    "~standard": {
      version: 1,
      vendor: "consumer",
      validate: (value) => (typeof value === "object" && value !== null ? { value } : { issues: [{ message: "object" }] }),
    },
  },
  steps: { start: (ctx) => ctx.done({ echoed: ctx.state.word }) },
});
${wrap(`await migrate({ connectionString: process.env.DATABASE_URL, schema });
  const engine = new GenDurable({ connectionString: process.env.DATABASE_URL, schema, machines: [Echo], queues: { default: 1 }, pollInterval: 100 });
  await engine.start();
  const { id } = await engine.insert(Echo, { state: { word: "hi" } });
  const done = await engine.wait(id, { timeout: 30000 });
  await engine.stop();
  console.log(JSON.stringify(done.result));`)}
`;

const ESM = program(`import { GenDurable, defineMachine, migrate } from "gen-durable";`, (body) => body);
const CJS = program(
  `const { GenDurable, defineMachine, migrate } = require("gen-durable");`,
  (body) => `(async () => {\n  ${body}\n})().catch((error) => { console.error(error); process.exit(1); });`,
);

/** Strict TypeScript against the shipped declarations: generics, options, errors, the testing entry point. */
const TYPED = `import { z } from "./schema.js";
import { GenDurable, ValidationError, defineJob, defineMachine, type Instance, type GenDurableOptions } from "gen-durable";
import { runStep } from "gen-durable/testing";
import type pg from "pg";

const Order = defineMachine({
  name: "Order",
  state: z,
  steps: {
    start: (ctx) => ctx.await("paid", "ship"),
    ship: (ctx) => ctx.done({ order: ctx.state.order }),
  },
});
const Mail = defineJob({ name: "Mail", args: z, perform: async (args) => ({ to: args.order }) });
export async function main(pool: pg.Pool): Promise<number> {
  const options: GenDurableOptions = { pool, machines: [Order, Mail], queues: { default: 2 } };
  const engine = new GenDurable(options);
  const { id } = await engine.insert(Order, { state: { order: 1 }, correlationKey: "order:1" });
  const found: Instance | null = await engine.get(id);
  const step = await runStep(Order, "start", { state: { order: 1 } });
  if (step.type === "await" && found && !(found instanceof ValidationError)) return found.attempt;
  return 0;
}
`;

/** A tiny Standard Schema by hand: the consumer has no zod. */
const SCHEMA = `import type { StandardSchemaV1 } from "@standard-schema/spec";
export const z: StandardSchemaV1<{ order: number }> = {
  "~standard": {
    version: 1,
    vendor: "consumer",
    validate: (value) =>
      typeof value === "object" && value !== null && typeof (value as { order?: unknown }).order === "number"
        ? { value: value as { order: number } }
        : { issues: [{ message: "expected { order: number }" }] },
  },
};
`;

const TSCONFIG = {
  compilerOptions: {
    target: "ES2022",
    module: "NodeNext",
    moduleResolution: "NodeNext",
    strict: true,
    noUncheckedIndexedAccess: true,
    exactOptionalPropertyTypes: true,
    skipLibCheck: false,
    noEmit: true,
  },
  include: ["*.ts"],
};

describe("the packed package in a consumer project", () => {
  let dir: string;
  let files: string[];
  const schema = `consumer_${Math.random().toString(16).slice(2, 10)}`;

  beforeAll(async () => {
    dir = mkdtempSync(join(tmpdir(), "gen-durable-consumer-"));
    // prepack builds dist/ first.
    const { stdout } = await run(npm, ["pack", "--json", "--pack-destination", dir], {
      cwd: root,
      maxBuffer: 64 << 20,
    });
    const [packed] = JSON.parse(stdout.slice(stdout.indexOf("["))) as Array<{
      filename: string;
      files: Array<{ path: string }>;
    }>;
    files = packed!.files.map((f) => f.path);
    writeFileSync(join(dir, "package.json"), JSON.stringify({ name: "consumer", private: true, type: "module" }));
    await run(
      npm,
      ["install", "--prefer-offline", "--no-audit", "--no-fund", "--loglevel=error", join(dir, packed!.filename)],
      { cwd: dir, maxBuffer: 64 << 20 },
    );
    writeFileSync(join(dir, "tsconfig.json"), JSON.stringify(TSCONFIG));
    writeFileSync(join(dir, "schema.ts"), SCHEMA);
    writeFileSync(join(dir, "typed.ts"), TYPED);
    writeFileSync(join(dir, "esm.mjs"), ESM);
    writeFileSync(join(dir, "cjs.cjs"), CJS);
  }, 300_000);

  afterAll(async () => {
    const pool = new pg.Pool({ connectionString: databaseUrl(), max: 1 });
    await pool.query(`drop schema if exists ${schema} cascade`);
    await pool.end();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  it("ships the build, the sources, README, LICENSE, the guides and recipes, and no tests or benchmarks", () => {
    expect(files).toEqual(expect.arrayContaining(["LICENSE", "README.md", "CHANGELOG.md", "package.json"]));
    expect(files).toEqual(expect.arrayContaining(["dist/index.js", "dist/index.d.ts", "dist/testing/index.js"]));
    expect(files).toEqual(expect.arrayContaining(["dist/cli/main.js", "docs/getting-started.md", "examples/demo.ts"]));
    const stray = files.filter((f) => /^(test|bench|dev|scripts|\.ci|docs\/api)\//.test(f) || /\.test\.[jt]s$/.test(f));
    expect(stray).toEqual([]);
  });

  // The package has no public web address yet, so the README cannot link to one: its links are relative,
  // and they must work where a user reads them, in the installed package. The benchmarks are the one
  // part left in the repository (they install the peers they compare against).
  it("resolves every relative link of the shipped README and guides inside the package", () => {
    const shipped = new Set(files);
    const pages = files.filter((f) => f === "README.md" || /^docs\/[^/]+\.md$/.test(f));
    expect(pages.length).toBeGreaterThan(20);
    const broken = pages.flatMap((page) =>
      linkTargets(readFileSync(join(dir, "node_modules", "gen-durable", page), "utf8"))
        .map((target) => ({ target, file: localFile(page, target) }))
        .filter(({ file }) => file !== undefined && !file.startsWith("bench/"))
        .filter(({ file }) => !shipped.has(file!) && !files.some((f) => f.startsWith(`${file!.replace(/\/$/, "")}/`)))
        .map(({ target }) => `${page}: ${target}`),
    );
    expect(broken).toEqual([]);
  });

  it("compiles a strict TypeScript file with skipLibCheck false", async () => {
    const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
    const result = await run(process.execPath, [tsc, "-p", "tsconfig.json"], { cwd: dir }).catch(
      (e: { stdout: string; stderr: string }) => e,
    );
    expect(result.stdout + result.stderr).toBe("");
  });

  it("runs as an ES module and through require() against Postgres", async () => {
    const env = { ...process.env, DATABASE_URL: databaseUrl(), CONSUMER_SCHEMA: schema };
    const esm = await run(process.execPath, ["esm.mjs"], { cwd: dir, env });
    expect(esm.stdout.trim()).toBe(JSON.stringify({ echoed: "hi" }));
    const cjs = await run(process.execPath, ["cjs.cjs"], { cwd: dir, env });
    expect(cjs.stdout.trim()).toBe(JSON.stringify({ echoed: "hi" }));
  });
});
