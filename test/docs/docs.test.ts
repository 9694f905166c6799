/**
 * Executes the code in the documentation. For each markdown file (README.md and
 * docs/*.md) the ```ts blocks — all but those fenced ```ts no-run — are joined in
 * order into one module, `import ... from "gen-durable"` is pointed at the
 * sources, and the module runs under tsx in a child process with DATABASE_URL
 * set to a fresh database of its own (created here, dropped afterwards), exactly
 * as a user would run it. It must exit with code 0. The generated modules are
 * also type-checked, so an example that would not compile fails too. The modules
 * are removed after a green run; set KEEP_DOC_MODULES=1 to keep them.
 *
 * So that examples read like application code, a guide's assertions may live in
 * test/docs/checks/<guide>.ts instead of the prose: that file is appended to the
 * guide's module (its imports hoisted like the blocks'), after the last block.
 */
import { execFile } from "node:child_process";
import { availableParallelism } from "node:os";
import { existsSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, relative } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, describe, expect, it } from "vitest";
import { createDatabase } from "../support/db.js";

const root = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const outDir = join(root, "test", "docs", ".generated");
const checksDir = join(root, "test", "docs", "checks");
const tsx = join(root, "node_modules", ".bin", "tsx");
const tsc = join(root, "node_modules", ".bin", "tsc");
/** Limit for one child process, counted from its start. */
const RUN_TIMEOUT_MS = 120_000;
/** The children are CPU-bound (tsx compiles the sources): run a few at a time, not all at once. */
const SLOTS = Math.max(2, Math.min(4, availableParallelism()));
/** A test may wait for a slot before its child starts. */
const TEST_TIMEOUT_MS = 600_000;

let freeSlots = SLOTS;
const slotWaiters: Array<() => void> = [];
async function withSlot<T>(work: () => Promise<T>): Promise<T> {
  while (freeSlots === 0) await new Promise<void>((resolve) => slotWaiters.push(resolve));
  freeSlots--;
  try {
    return await work();
  } finally {
    freeSlots++;
    slotWaiters.shift()?.();
  }
}

export interface Block {
  /** 1-based line of the opening fence. */
  line: number;
  code: string;
}

/** The runnable TypeScript blocks of a markdown text: ```ts or ```typescript, unless the info string says no-run. */
export function runnableBlocks(markdown: string): Block[] {
  const blocks: Block[] = [];
  const lines = markdown.split("\n");
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)(`{3,}|~{3,})\s*(\S*)(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const [, indent, fence, lang, rest] = open;
    const close = new RegExp(`^\\s*${fence![0] === "`" ? "`" : "~"}{${fence!.length},}\\s*$`);
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !close.test(lines[j]!); j++)
      body.push(lines[j]!.startsWith(indent!) ? lines[j]!.slice(indent!.length) : lines[j]!);
    if (j === lines.length) throw new Error(`unclosed code fence opened at line ${i + 1}`);
    const runnable = (lang === "ts" || lang === "typescript") && !/\bno-run\b/.test(rest!);
    if (runnable) blocks.push({ line: i + 1, code: body.join("\n") });
    i = j;
  }
  return blocks;
}

const IMPORT = /^import\s[^;]*?(?:from\s*)?["']([^"']+)["'];?[ \t]*$/gm;

/** One module from the blocks: imports hoisted and de-duplicated, "gen-durable" pointed at the sources. */
export function toModule(doc: string, blocks: Block[], sourceEntry: string): string {
  const imports: string[] = [];
  const bodies: string[] = [];
  for (const block of blocks) {
    const body = block.code.replace(IMPORT, (statement: string, specifier: string) => {
      // "gen-durable/testing" (a package subpath) -> the sources' testing/index.js, next to index.js.
      const subpath = /^gen-durable\/([a-z-]+)$/.exec(specifier)?.[1];
      const target =
        specifier === "gen-durable"
          ? sourceEntry
          : subpath
            ? sourceEntry.replace(/index\.js$/, `${subpath}/index.js`)
            : undefined;
      const resolved = target
        ? statement.replace(/(["'])gen-durable(\/[a-z-]+)?\1/, JSON.stringify(target))
        : statement;
      const normalized = resolved.replace(/\s+/g, " ").replace(/;?\s*$/, ";");
      if (!imports.includes(normalized)) imports.push(normalized);
      return "";
    });
    const where = block.line === 0 ? "its checks (test/docs/checks/)" : `block at line ${block.line}`;
    bodies.push(`// ---- ${doc}, ${where}\n${body.trim()}`);
  }
  return [
    `// Generated from ${doc} by test/docs/docs.test.ts. Do not edit.`,
    ...imports,
    "",
    ...bodies,
    "",
    "export {};",
    "",
  ].join("\n");
}

interface Doc {
  /** Path relative to the repository root. */
  path: string;
  /** Generated module, absolute. */
  module: string;
  /** Short name for the database and the module file. */
  name: string;
  blocks: Block[];
}

function collectDocs(): Doc[] {
  const docsDir = join(root, "docs");
  const paths = [
    "README.md",
    ...(existsSync(docsDir)
      ? readdirSync(docsDir)
          .filter((f) => f.endsWith(".md"))
          .sort()
          .map((f) => `docs/${f}`)
      : []),
  ];
  return paths.map((path) => {
    const name = basename(path, ".md")
      .toLowerCase()
      .replace(/[^a-z0-9]+/g, "_");
    const blocks = runnableBlocks(readFileSync(join(root, path), "utf8"));
    // The checks of a guide's examples live beside this harness, not in the prose: checks/<guide>.ts runs
    // after the guide's blocks, in the same module, so it sees their top-level names.
    const checks = join(checksDir, `${basename(path, ".md")}.ts`);
    if (blocks.length > 0 && existsSync(checks))
      blocks.push({ line: 0, code: readFileSync(checks, "utf8").replace(/^export \{\};?\s*$/m, "") });
    return { path, name, module: join(outDir, `${name}.ts`), blocks };
  });
}

function run(
  file: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  timeout: number,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(
      file,
      args,
      { cwd: root, env, timeout, killSignal: "SIGKILL", maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error ? (typeof error.code === "number" ? error.code : null) : 0;
        resolve({ code, stdout, stderr: error && error.killed ? `${stderr}\n(killed after ${timeout} ms)` : stderr });
      },
    );
  });
}

const docs = collectDocs();
const failed = new Set<string>();

mkdirSync(outDir, { recursive: true });
const sourceEntry = relative(outDir, join(root, "src", "index.js"))
  .split("\\")
  .join("/");
for (const doc of docs)
  writeFileSync(
    doc.module,
    toModule(doc.path, doc.blocks, sourceEntry.startsWith(".") ? sourceEntry : `./${sourceEntry}`),
  );
writeFileSync(
  join(outDir, "tsconfig.json"),
  JSON.stringify(
    { extends: "../../../tsconfig.json", compilerOptions: { noEmit: true, noUnusedLocals: false }, include: ["*.ts"] },
    null,
    2,
  ) + "\n",
);

afterAll(() => {
  // Keep the modules of failing docs for inspection; the rest would only confuse linters and editors.
  if (failed.size > 0 || process.env.KEEP_DOC_MODULES) return;
  for (const doc of docs) rmSync(doc.module, { force: true });
  rmSync(join(outDir, "tsconfig.json"), { force: true });
});

describe("documentation examples", () => {
  it("finds the docs and their examples", () => {
    expect(
      docs.find((d) => d.path === "README.md")?.blocks.length,
      "README.md has no runnable ts block",
    ).toBeGreaterThan(0);
    expect(
      docs.filter((d) => d.path.startsWith("docs/") && d.blocks.length > 0).length,
      "no runnable ts block in docs/",
    ).toBeGreaterThan(0);
  });

  it.concurrent(
    "type-checks every example",
    async () => {
      const result = await withSlot(() =>
        run(process.execPath, [tsc, "-p", join(outDir, "tsconfig.json")], process.env, RUN_TIMEOUT_MS),
      );
      if (result.code !== 0) docs.forEach((d) => failed.add(d.path));
      expect(result.code, `tsc failed on the generated doc modules:\n${result.stdout}${result.stderr}`).toBe(0);
    },
    TEST_TIMEOUT_MS,
  );

  for (const doc of docs.filter((d) => d.blocks.length > 0)) {
    it.concurrent(
      `runs ${doc.path} (${doc.blocks.length} blocks)`,
      async () => {
        const result = await withSlot(async () => {
          const db = await createDatabase(`doc_${doc.name}`);
          try {
            return await run(tsx, [doc.module], { ...process.env, DATABASE_URL: db.url }, RUN_TIMEOUT_MS);
          } finally {
            await db.drop();
          }
        });
        if (result.code !== 0) failed.add(doc.path);
        expect(
          result.code,
          `${doc.path} (generated: ${relative(root, doc.module)}) exited with ${result.code}:\n${result.stderr}`,
        ).toBe(0);
      },
      TEST_TIMEOUT_MS,
    );
  }
});

describe("code block extraction", () => {
  it("keeps ts blocks in order, skips no-run and other languages", () => {
    const md = [
      "# t",
      "```ts",
      "const a = 1;",
      "```",
      "```sh",
      "npm test",
      "```",
      "```ts no-run",
      "broken(",
      "```",
      "```typescript",
      "const b = a;",
      "```",
    ].join("\n");
    expect(runnableBlocks(md)).toEqual([
      { line: 2, code: "const a = 1;" },
      { line: 11, code: "const b = a;" },
    ]);
  });

  it("hoists and de-duplicates imports and points gen-durable at the sources", () => {
    const code = toModule(
      "x.md",
      [
        {
          line: 1,
          code: 'import { z } from "zod";\nimport { GenDurable,\n  migrate } from "gen-durable";\nconst a = 1;',
        },
        { line: 9, code: 'import { z } from "zod";\nconst b = a;' },
      ],
      "../src/index.js",
    );
    expect(code.match(/from "zod"/g)).toHaveLength(1);
    expect(code).toContain('import { GenDurable, migrate } from "../src/index.js";');
    expect(
      toModule("y.md", [{ line: 1, code: 'import { drain } from "gen-durable/testing";' }], "../src/index.js"),
    ).toContain('import { drain } from "../src/testing/index.js";');
    expect(code.indexOf("const a")).toBeLessThan(code.indexOf("const b"));
  });
});
