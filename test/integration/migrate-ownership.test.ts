// Which schemas migrate() and Migration.up()/down() touch: a schema someone else
// created for gen-durable (owned by a role that may not create schemas), never
// one holding the application's own objects (public above all), schemas from
// earlier versions recognised by their migrations table, and a down() that
// drops gen-durable's objects only and never cascades into the user's.
import { randomBytes } from "node:crypto";
import pg from "pg";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { runCli } from "../../src/cli/cli.js";
import { COMMANDS } from "../../src/cli/commands/index.js";
import { ConfigError, GenDurable, migrate, Migration, NotMigratedError } from "../../src/index.js";
import { currentVersion } from "../../src/migrate.js";
import { MIGRATIONS } from "../../src/sql/migrations.generated.js";
import { databaseUrl, dropDatabase } from "../support/db.js";

const url = databaseUrl();
const admin = new pg.Pool({ connectionString: url, max: 2 });
const suffix = randomBytes(4).toString("hex");
const ALL = Migration.list().map((m) => m.id);

/** The SQL an earlier version of migrate() ran: no mark on the schema, migrations 1..upTo. */
function legacySql(schema: string, upTo = MIGRATIONS.length): string {
  return [
    `create schema if not exists "${schema}";`,
    `create table if not exists "${schema}".migrations (id integer primary key, name text not null, applied_at timestamptz not null default now());`,
    ...MIGRATIONS.slice(0, upTo).map(
      (m) =>
        `${m.sql.replaceAll("{{schema}}", `"${schema}"`)}\ninsert into "${schema}".migrations (id, name) values (${m.id}, '${m.name}');`,
    ),
  ].join("\n");
}

async function relations(pool: pg.Pool, schema: string): Promise<string[]> {
  const { rows } = await pool.query<{ relname: string }>(
    "select relname from pg_class c join pg_namespace n on n.oid = c.relnamespace where nspname = $1 and relkind in ('r', 'v') order by relname",
    [schema],
  );
  return rows.map((r) => r.relname);
}

async function schemaExists(pool: pg.Pool, schema: string): Promise<boolean> {
  return (await pool.query("select 1 from pg_namespace where nspname = $1", [schema])).rows.length === 1;
}

describe("a role that owns its schema but may not create schemas", () => {
  const role = `gd_owner_${suffix}`;
  const owned = `m_owned_${suffix}`;
  const granted = `m_granted_${suffix}`;
  const roleUrl = new URL(url);
  roleUrl.username = role;
  roleUrl.password = "pw";

  beforeAll(async () => {
    await admin.query(`create role ${role} login password 'pw'`);
    // The DBA's set-up: one schema owned by the role, one it was granted use of.
    await admin.query(`create schema ${owned} authorization ${role}`);
    await admin.query(`create schema ${granted}; grant usage, create on schema ${granted} to ${role}`);
  });
  afterAll(async () => {
    await admin.query(`drop schema if exists ${owned} cascade`);
    await admin.query(`drop schema if exists ${granted} cascade`);
    await admin.query(`drop owned by ${role}`);
    await admin.query(`drop role ${role}`);
  });

  it("has no CREATE on the database", async () => {
    const { rows } = await admin.query("select has_database_privilege($1, current_database(), 'CREATE') as can", [
      role,
    ]);
    expect(rows[0].can).toBe(false);
  });

  it("migrates the empty schema it owns, then finds it current, and an engine starts on it", async () => {
    expect(await migrate({ connectionString: roleUrl.toString(), schema: owned })).toEqual(ALL);
    expect(await migrate({ connectionString: roleUrl.toString(), schema: owned })).toEqual([]);
    const engine = new GenDurable({ connectionString: roleUrl.toString(), schema: owned });
    await engine.start();
    await engine.stop();
    // Migration.down() drops the tables but keeps the schema the DBA made.
    const role_ = new pg.Pool({ connectionString: roleUrl.toString(), max: 1 });
    try {
      await role_.query(Migration.down({ schema: owned }));
      expect(await relations(admin, owned)).toEqual([]);
      expect(await schemaExists(admin, owned)).toBe(true);
      // ...so that it can be migrated again, by the same role.
      expect(await migrate({ pool: role_, schema: owned })).toEqual(ALL);
    } finally {
      await role_.end();
    }
  });

  it("migrates an empty schema it may create in but does not own, then finds it current", async () => {
    expect(await migrate({ connectionString: roleUrl.toString(), schema: granted })).toEqual(ALL);
    expect(await migrate({ connectionString: roleUrl.toString(), schema: granted })).toEqual([]);
  });
});

describe("schemas that are not gen-durable's", () => {
  // A database of its own: these tests put tables in `public`.
  const database = `gd_schemas_${suffix}`;
  const dbUrl = new URL(url);
  dbUrl.pathname = `/${database}`;
  let pool: pg.Pool;

  beforeAll(async () => {
    await admin.query(`create database ${database}`);
    pool = new pg.Pool({ connectionString: dbUrl.toString(), max: 2 });
  });
  afterAll(async () => {
    await pool?.end();
    await dropDatabase(admin, database);
  });

  it("refuses public, for migrate() and Migration.up(), and creates nothing", async () => {
    const refused = migrate({ connectionString: dbUrl.toString(), schema: "public" });
    await expect(refused).rejects.toBeInstanceOf(ConfigError);
    await expect(refused).rejects.toThrowError(
      /schema "public" is refused: it is the database's shared default schema/,
    );
    expect(() => Migration.up({ schema: "public" })).toThrowError(ConfigError);
    expect(await relations(pool, "public")).toEqual([]);
  });

  it("the CLI says so too: migrate fails (exit 1), sql is a usage error (exit 2), without a stack", async () => {
    for (const [args, code] of [
      [["migrate", "--schema", "public"], 1],
      [["sql", "--schema", "public"], 2],
    ] as const) {
      let stdout = "";
      let stderr = "";
      const exit = await runCli([...args], COMMANDS, {
        out: (l) => (stdout += l + "\n"),
        err: (l) => (stderr += l + "\n"),
        env: { DATABASE_URL: dbUrl.toString() },
      });
      expect({ exit, stdout }).toEqual({ exit: code, stdout: "" });
      expect(stderr).toContain('schema "public" is refused');
      expect(stderr).not.toMatch(/^\s+at /m);
    }
    expect(await relations(pool, "public")).toEqual([]);
  });

  it("never reads the application's own migrations table as gen-durable's", async () => {
    await pool.query(
      "create table public.migrations (id integer primary key, name text not null, applied_at timestamptz default now())",
    );
    await pool.query("insert into public.migrations (id, name) select n, 'app_' || n from generate_series(1, 10) n");
    expect(await currentVersion(pool, "public")).toBe(0);
    const engine = new GenDurable({ connectionString: dbUrl.toString(), schema: "public" });
    await expect(engine.start()).rejects.toBeInstanceOf(NotMigratedError);
    await engine.stop();
    await expect(migrate({ connectionString: dbUrl.toString(), schema: "public" })).rejects.toBeInstanceOf(ConfigError);
    expect(await relations(pool, "public")).toEqual(["migrations"]);
  });

  it("refuses a schema holding the application's objects, even with a migrations table that starts like ours", async () => {
    const cases: Array<[string, string]> = [
      ["app_tables", "create table %s.users (id int)"],
      [
        "app_migrations",
        "create table %s.migrations (id integer primary key, name text not null, applied_at timestamptz default now()); insert into %s.migrations values (1, 'create_users'); create table %s.users (id int)",
      ],
      [
        "app_init",
        "create table %s.migrations (id integer primary key, name text not null); insert into %s.migrations values (1, 'init'); create table %s.instances (id int)",
      ],
      ["app_function", "create function %s.f() returns int language sql as 'select 1'"],
    ];
    for (const [name, setup] of cases) {
      await pool.query(`create schema ${name}; ${setup.replaceAll("%s", name)}`);
      const before = await relations(pool, name);
      const refused = migrate({ connectionString: dbUrl.toString(), schema: name });
      await expect(refused, name).rejects.toBeInstanceOf(ConfigError);
      await expect(refused, name).rejects.toThrowError(
        new RegExp(
          `schema "${name}" already holds objects gen-durable did not create \\(.*${name}\\.(users|f|instances)`,
        ),
      );
      await expect(pool.query(Migration.up({ schema: name })), name).rejects.toThrowError(
        /already holds objects gen-durable did not create/,
      );
      await expect(pool.query(Migration.down({ schema: name })), name).rejects.toThrowError(
        new RegExp(`schema ${name} is not gen-durable's.*nothing was dropped`),
      );
      expect(await relations(pool, name), name).toEqual(before);
    }
  });

  it("takes an empty schema, and Migration.up() too; down() then keeps the schema it did not create", async () => {
    await pool.query("create schema empty_a; create schema empty_b");
    expect(await migrate({ connectionString: dbUrl.toString(), schema: "empty_a" })).toEqual(ALL);
    await pool.query(Migration.up({ schema: "empty_b" }));
    expect(await migrate({ connectionString: dbUrl.toString(), schema: "empty_b" })).toEqual([]);
    for (const schema of ["empty_a", "empty_b"]) {
      await pool.query(Migration.down({ schema }));
      expect(await relations(pool, schema)).toEqual([]);
      expect(await schemaExists(pool, schema)).toBe(true);
    }
  });

  it("recognises schemas migrated by earlier versions (no mark): upgrades them, and down() removes them", async () => {
    await pool.query(legacySql("legacy_old", 2));
    await pool.query(legacySql("legacy_current"));
    expect(await migrate({ connectionString: dbUrl.toString(), schema: "legacy_old" })).toEqual(ALL.slice(2));
    expect(await migrate({ connectionString: dbUrl.toString(), schema: "legacy_current" })).toEqual([]);
    for (const schema of ["legacy_old", "legacy_current"]) {
      await pool.query(Migration.down({ schema }));
      expect(await schemaExists(pool, schema)).toBe(false);
    }
  });

  it("down() on a public that an earlier version migrated drops gen-durable's tables only, never the schema", async () => {
    await pool.query("drop table public.migrations");
    await pool.query("create table public.users (id int)");
    await pool.query(legacySql("public"));
    expect(await migrate({ connectionString: dbUrl.toString(), schema: "public" })).toEqual([]);
    await pool.query(Migration.down({ schema: "public" }));
    expect(await relations(pool, "public")).toEqual(["users"]);
    expect(await schemaExists(pool, "public")).toBe(true);
  });

  it("down() refuses, naming them, when the user's objects depend on gen-durable's tables, and drops nothing", async () => {
    await migrate({ connectionString: dbUrl.toString(), schema: "gd" });
    await pool.query("create schema app");
    await pool.query("create view app.running as select id, machine from gd.instances where status = 'running'");
    await pool.query("create table app.orders (id int primary key, instance_id bigint references gd.instances (id))");
    const refused = pool.query(Migration.down({ schema: "gd" }));
    await expect(refused).rejects.toThrowError(
      /cannot drop the tables of schema gd: objects that are not gen-durable's depend on them/,
    );
    await expect(refused).rejects.toThrowError(/view app\.running depends on table gd\.instances/);
    await expect(refused).rejects.toThrowError(
      /constraint orders_instance_id_fkey on table app\.orders depends on table gd\.instances/,
    );
    expect(await relations(pool, "gd")).toContain("instances");
    expect(await relations(pool, "app")).toEqual(["orders", "running"]);
    // The user's own table in our schema, depending on nothing of ours, is kept, and so is the schema.
    await pool.query(
      "drop view app.running; alter table app.orders drop constraint orders_instance_id_fkey; create table gd.notes (t text)",
    );
    await pool.query(Migration.down({ schema: "gd" }));
    expect(await relations(pool, "gd")).toEqual(["notes"]);
    await pool.query("drop table gd.notes");
    await pool.query(Migration.down({ schema: "gd" }));
    expect(await schemaExists(pool, "gd")).toBe(false);
  });
});
