// The import recipe: chunks in parallel; the first bad chunk resumes the import and cancels the rest.
import { describe, expect, it } from "vitest";
import { Import, ImportChunk, imported } from "../../examples/import-fanout.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const engine = db.engine({ queues: { imports: 8 }, machines: [Import, ImportChunk], pollInterval: 50 });
await engine.start();
const lines = (n: number) => Array.from({ length: n }, (_, i) => `${i},row ${i}`);

describe("import fan-out recipe", () => {
  it("imports every chunk and sums their rows", async () => {
    const { id } = await engine.insert(Import, { state: { file: "ok.csv", lines: lines(950), chunkSize: 100 } });
    expect((await engine.wait(id, { timeout: 20_000 })).result).toEqual({ ok: true, rows: 950 });
    expect(imported.size).toBe(10);
  });

  it("stops at the first bad chunk: the import reports it, no chunk is left running", async () => {
    const bad = lines(500);
    bad[250] = "oops";
    const { id } = await engine.insert(Import, { state: { file: "bad.csv", lines: bad, chunkSize: 50 } });
    const done = await engine.wait(id, { timeout: 20_000 });
    expect(done.result).toEqual({ ok: false, error: 'chunk 5, row 0: "oops" has no numeric id' });
    const chunks = (await engine.list({ machine: "ImportChunk", limit: 1000 })).filter((c) => c.parentId === id);
    expect(chunks).toHaveLength(10);
    expect(chunks.every((c) => ["done", "failed", "cancelled"].includes(c.status))).toBe(true);
  });
});
