/**
 * Versioned, idempotent migrations. All of them run in one transaction under an
 * advisory lock keyed by the schema name, so ten processes starting at once
 * apply each migration exactly once and the others simply find nothing to do.
 */
import type pg from "pg";
import { ConfigError } from "./errors.js";
import { openPool, withTransaction, type ConnectionOptions } from "./db/pool.js";
import { checkSchemaName, quoteIdent } from "./names.js";
import { MIGRATIONS } from "./sql/migrations.generated.js";
import { rejectUnknownKeys } from "./suggest.js";

export const DEFAULT_SCHEMA = "gen_durable";
export const LATEST_MIGRATION = MIGRATIONS.length;

export interface MigrateOptions extends ConnectionOptions {
  /** Schema to hold the tables; default "gen_durable". */
  schema?: string;
}

function sqlFor(id: number, schema: string): string {
  const migration = MIGRATIONS[id - 1]!;
  return migration.sql.replaceAll("{{schema}}", quoteIdent(schema));
}

function lockKey(schema: string): string {
  return `gen_durable:migrate:${schema}`;
}

/** Applies every pending migration; returns the ids it applied (empty when already current). */
export async function migrate(options: MigrateOptions): Promise<number[]> {
  if (typeof options !== "object" || options === null) throw new ConfigError("migrate: options are required");
  rejectUnknownKeys(options, ["connectionString", "pool", "schema"], "migrate", (m) => new ConfigError(m));
  const schema = checkSchemaName(options.schema ?? DEFAULT_SCHEMA, (m) => new ConfigError(`migrate: ${m}`));
  const { pool, owned } = openPool(options, "migrate", "gen-durable-migrate", 1);
  try {
    return await withTransaction(pool, async (client) => {
      await client.query("select pg_advisory_xact_lock(hashtext($1))", [lockKey(schema)]);
      await client.query(`create schema if not exists ${quoteIdent(schema)}`);
      await client.query(
        `create table if not exists ${quoteIdent(schema)}.migrations (id integer primary key, name text not null, applied_at timestamptz not null default now())`,
      );
      const current = await currentVersion(client, schema);
      const applied: number[] = [];
      for (const migration of MIGRATIONS.slice(current)) {
        await client.query(sqlFor(migration.id, schema));
        await client.query(`insert into ${quoteIdent(schema)}.migrations (id, name) values ($1, $2)`, [migration.id, migration.name]);
        applied.push(migration.id);
      }
      return applied;
    });
  } finally {
    if (owned) await pool.end();
  }
}

/** The highest applied migration in `schema`, 0 when the schema or its migrations table does not exist. */
export async function currentVersion(client: pg.ClientBase | pg.Pool, schema: string): Promise<number> {
  const { rows } = await client.query<{ version: number | null }>(
    `select case when to_regclass($1) is null then 0 end as version`,
    [`${quoteIdent(schema)}.migrations`],
  );
  if (rows[0]?.version === 0) return 0;
  const result = await client.query<{ version: number }>(`select coalesce(max(id), 0)::int as version from ${quoteIdent(schema)}.migrations`);
  return result.rows[0]!.version;
}

/** The SQL of the migrations, for applying with your own migration tool. */
export const Migration = {
  /** SQL that creates the schema from nothing and records every migration. */
  up(options: { schema?: string } = {}): string {
    const schema = checkSchemaName(options.schema ?? DEFAULT_SCHEMA, (m) => new ConfigError(`Migration.up: ${m}`));
    const q = quoteIdent(schema);
    return [
      `create schema if not exists ${q};`,
      `create table if not exists ${q}.migrations (id integer primary key, name text not null, applied_at timestamptz not null default now());`,
      ...MIGRATIONS.map((m) => `${sqlFor(m.id, schema)}\ninsert into ${q}.migrations (id, name) values (${m.id}, '${m.name}');`),
    ].join("\n");
  },
  /** SQL that removes the schema and everything in it. */
  down(options: { schema?: string } = {}): string {
    const schema = checkSchemaName(options.schema ?? DEFAULT_SCHEMA, (m) => new ConfigError(`Migration.down: ${m}`));
    return `drop schema if exists ${quoteIdent(schema)} cascade;`;
  },
  /** The numbered migrations, oldest first. */
  list(): ReadonlyArray<{ id: number; name: string }> {
    return MIGRATIONS.map(({ id, name }) => ({ id, name }));
  },
};
