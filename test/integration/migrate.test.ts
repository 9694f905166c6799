import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { ConfigError, GenDurable, migrate, Migration } from "../../src/index.js";
import { execFile } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { promisify } from "node:util";
import { render, writeIfChanged } from "../../scripts/embed-migrations.mjs";
import { databaseUrl } from "../support/db.js";

const url = databaseUrl();
const pool = new pg.Pool({ connectionString: url, max: 2 });
const schemas: string[] = [];
const fresh = () => {
  const name = `m_${randomBytes(4).toString("hex")}`;
  schemas.push(name);
  return name;
};
afterAll(async () => {
  for (const s of schemas) await pool.query(`drop schema if exists ${s} cascade`);
  await pool.end();
});

describe("migrate", () => {
  it("applies every migration once and is idempotent", async () => {
    const schema = fresh();
    const all = Migration.list().map((m) => m.id);
    expect(await migrate({ connectionString: url, schema })).toEqual(all);
    expect(await migrate({ connectionString: url, schema })).toEqual([]);
    const { rows } = await pool.query(`select id from ${schema}.migrations order by id`);
    expect(rows.map((r) => r.id)).toEqual(all);
  });

  it("works with a caller's pool and leaves it open", async () => {
    const schema = fresh();
    await migrate({ pool, schema });
    expect((await pool.query("select 1 as one")).rows[0].one).toBe(1);
  });

  it("Migration.up() is the same schema, for users' own tools; down() removes it", async () => {
    const schema = fresh();
    await pool.query(Migration.up({ schema }));
    expect(await migrate({ connectionString: url, schema })).toEqual([]);
    const engine = new GenDurable({ connectionString: url, schema });
    await engine.start();
    await engine.stop();
    await pool.query(Migration.down({ schema }));
    const { rows } = await pool.query("select count(*)::int as n from pg_namespace where nspname = $1", [schema]);
    expect(rows[0].n).toBe(0);
  });

  it.each(["Public", "x-y", "1abc", "pg_catalog", "a; drop table t", "a".repeat(42), ""])(
    "rejects the schema name %j",
    async (schema) => {
      await expect(migrate({ connectionString: url, schema })).rejects.toBeInstanceOf(ConfigError);
      expect(() => Migration.up({ schema })).toThrowError(/schema must match/);
    },
  );

  it("rejects unknown options and a missing connection", async () => {
    await expect(migrate({ connectionString: url, shema: "x" } as never)).rejects.toThrowError(/did you mean "schema"/);
    await expect(migrate({} as never)).rejects.toThrowError(/connectionString \(or pool\) is required/);
  });

  it("the generated migrations module matches the .sql files", () => {
    expect(readFileSync(new URL("../../src/sql/migrations.generated.ts", import.meta.url), "utf8")).toBe(render());
  });

  // The build (run by npm pack, which a test runs) regenerates the module while other test files
  // import it: rewritten in place, it was empty for a moment, and a module loaded then had no
  // MIGRATIONS export.
  it("the build leaves a current generated module untouched", async () => {
    const generated = fileURLToPath(new URL("../../src/sql/migrations.generated.ts", import.meta.url));
    const before = statSync(generated);
    await promisify(execFile)(process.execPath, [
      fileURLToPath(new URL("../../scripts/embed-migrations.mjs", import.meta.url)),
    ]);
    const after = statSync(generated);
    expect({ ino: after.ino, mtimeMs: after.mtimeMs }).toEqual({ ino: before.ino, mtimeMs: before.mtimeMs });
  });

  it("a changed generated module is written beside the old one and renamed over it", () => {
    const dir = mkdtempSync(join(tmpdir(), "gen-durable-embed-"));
    try {
      const file = join(dir, "generated.ts");
      writeFileSync(file, "old");
      const before = statSync(file);
      expect(writeIfChanged(file, "new")).toBe(true);
      expect(readFileSync(file, "utf8")).toBe("new");
      // A new file (inode): a reader that opened the old one reads it whole, never a truncated one.
      expect(statSync(file).ino).not.toBe(before.ino);
      expect(writeIfChanged(file, "new")).toBe(false);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
