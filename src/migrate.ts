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
import {
  ADOPTED_MARK,
  CREATED_MARK,
  downScript,
  instancesSignature,
  lifecycleQueries,
  MARK,
  migrateLock,
  namespace as namespaceOf,
  schemaContents,
  tableColumns,
  upScript,
} from "./sql/schema-lifecycle.js";
import { rejectUnknownKeys } from "./suggest.js";

export const DEFAULT_SCHEMA = "gen_durable";
export const LATEST_MIGRATION = MIGRATIONS.length;

/**
 * Options of `migrate()` and `Migration.down()`: where the database is (`connectionString` or `pool`),
 * which schema.
 */
export interface MigrateOptions extends ConnectionOptions {
  /** Schema to hold the tables; default "gen_durable". */
  schema?: string;
}

/** Applies every pending migration; returns the ids it applied (empty when already current). */
export async function migrate(options: MigrateOptions): Promise<number[]> {
  if (typeof options !== "object" || options === null) throw new ConfigError("migrate: options are required");
  rejectUnknownKeys(options, ["connectionString", "pool", "schema"], "migrate", (m) => new ConfigError(m));
  const schema = checkSchemaName(options.schema ?? DEFAULT_SCHEMA, (m) => new ConfigError(`migrate: ${m}`));
  const { pool, owned } = openPool(options, "migrate", "gen-durable-migrate", 1);
  const q = lifecycleQueries(schema);
  try {
    return await withTransaction(pool, async (client) => {
      await migrateLock(client, { schema });
      // Only what is missing is created: a role that owns the schema (or may create in
      // it) but may not create schemas in the database migrates a schema someone made for it.
      const found = await inspect(client, schema);
      if (!found.exists) {
        if (schema === "public") throw new ConfigError(publicRefused("migrate"));
        await q.createSchema(client);
        await q.mark(CREATED_MARK)(client);
      } else if (!found.ours) {
        if (schema === "public") throw new ConfigError(publicRefused("migrate"));
        if (found.objects.length > 0) throw new ConfigError(foreignRefused("migrate", schema, found.objects));
        // Empty: someone made it for us. Marked when we may, so down() keeps it.
        if (found.owned) await q.mark(ADOPTED_MARK)(client);
      }
      if (!found.migrationsTable) await q.createMigrationsTable(client);
      const current = await currentVersion(client, schema);
      const applied: number[] = [];
      for (const migration of MIGRATIONS.slice(current)) {
        await q.apply(migration.id)(client);
        await q.record(client, { id: migration.id, name: migration.name });
        applied.push(migration.id);
      }
      return applied;
    });
  } finally {
    if (owned) await pool.end();
  }
}

function publicRefused(where: string): string {
  return (
    `${where}: schema "public" is refused: it is the database's shared default schema, where the application's ` +
    `own tables (and, often, a table called migrations) live; gen-durable keeps its tables in a schema of its own: ` +
    `leave schema unset ` +
    `(gen_durable) or name another one`
  );
}

function foreignRefused(where: string, schema: string, objects: readonly string[]): string {
  const shown = objects.slice(0, 10).join(", ") + (objects.length > 10 ? ", ..." : "");
  return (
    `${where}: schema "${schema}" already holds objects gen-durable did not create (${shown}); gen-durable only ` +
    `migrates a schema it created, or an empty one: pick another schema name`
  );
}

interface Found {
  exists: boolean;
  /** The current role owns the schema (or is a member of its owner) and may comment on it. */
  owned: boolean;
  /** Marked as gen-durable's, or holding gen-durable's migrations table from before the mark. */
  ours: boolean;
  migrationsTable: boolean;
  /** Whatever the schema holds (descriptions, at most 11), to say why it is refused. */
  objects: string[];
}

async function inspect(client: pg.ClientBase, schema: string): Promise<Found> {
  const { rows } = await namespaceOf(client, { schema });
  const namespace = rows[0];
  if (!namespace) return { exists: false, owned: false, ours: false, migrationsTable: false, objects: [] };
  const contents = await schemaContents(client, { oid: namespace.oid });
  const applied = await appliedMigrations(client, schema);
  return {
    exists: true,
    owned: namespace.owned,
    ours: (namespace.mark ?? "").startsWith(MARK) || (await recognise(client, schema, applied)),
    migrationsTable: applied !== undefined,
    objects: contents.rows.map((r) => r.object),
  };
}

/**
 * A schema from before the mark is gen-durable's when its migrations table has
 * gen-durable's columns and rows (1 "init", 2 "flow_control", ... in order) and
 * its instances table is gen-durable's: an application's own migrations table,
 * whatever its rows, is never taken for ours.
 */
async function recognise(client: pg.ClientBase, schema: string, applied: Applied | undefined): Promise<boolean> {
  if (!applied || applied.foreign !== undefined || applied.version === 0) return false;
  const { rows } = await instancesSignature(client, { table: `${quoteIdent(schema)}.instances` });
  return rows[0]!.n === 5;
}

interface Applied {
  /** Migrations applied, 1..version. */
  version: number;
  /** Why the table is not gen-durable's, when it is not. */
  foreign?: string;
}

/** The migrations table of `schema` read and checked against ours; undefined when there is none. */
async function appliedMigrations(client: pg.ClientBase | pg.Pool, schema: string): Promise<Applied | undefined> {
  const columns = await tableColumns(client, { table: `${quoteIdent(schema)}.migrations` });
  if (columns.rows.length === 0) return undefined;
  const types = new Map(columns.rows.map((c) => [c.name, c.type]));
  if (types.get("id") !== "integer" || types.get("name") !== "text")
    return { version: 0, foreign: "its columns are not id integer, name text" };
  const { rows } = await lifecycleQueries(schema).applied(client);
  for (const [i, row] of rows.entries()) {
    const ours = MIGRATIONS[i];
    // A newer gen-durable may have applied migrations this one does not know: their names are not checked.
    if (row.id !== i + 1 || (ours !== undefined && ours.name !== row.name)) {
      return {
        version: 0,
        foreign: `row ${row.id} is "${row.name}", where gen-durable's migration ${i + 1} is "${ours?.name ?? "?"}"`,
      };
    }
  }
  return { version: rows.length };
}

/**
 * The highest applied migration in `schema`: 0 when the schema or its
 * migrations table does not exist, or when that table is not gen-durable's
 * (an application's own, in a schema gen-durable was pointed at by mistake:
 * migrate() then refuses the schema and says why).
 */
export async function currentVersion(client: pg.ClientBase | pg.Pool, schema: string): Promise<number> {
  const applied = await appliedMigrations(client, schema);
  return applied === undefined || applied.foreign !== undefined ? 0 : applied.version;
}

// ---------------------------------------------------------------- Migration.up/down

/** The SQL of the migrations, for applying with your own migration tool. */
export const Migration = {
  /**
   * SQL that creates the schema from nothing and records every migration. It
   * refuses (raises) when the schema already holds anything, and creates the
   * schema only when it is missing.
   */
  up(options: { schema?: string } = {}): string {
    const schema = checkSchemaName(options.schema ?? DEFAULT_SCHEMA, (m) => new ConfigError(`Migration.up: ${m}`));
    if (schema === "public") throw new ConfigError(publicRefused("Migration.up"));
    return upScript(schema);
  },
  /**
   * SQL that removes gen-durable's objects (its tables, functions...) from the
   * schema, and the schema itself when gen-durable created it and nothing else
   * is left in it. It refuses (raises, dropping nothing) when the schema is not
   * gen-durable's, or when objects that are not gen-durable's depend on its
   * tables (a view, a foreign key): it never cascades into them.
   */
  down(options: { schema?: string } = {}): string {
    const schema = checkSchemaName(options.schema ?? DEFAULT_SCHEMA, (m) => new ConfigError(`Migration.down: ${m}`));
    return downScript(schema);
  },
  /** The numbered migrations, oldest first. */
  list(): ReadonlyArray<{
    /** The migration's number, from 1. */
    id: number;
    /** Its name, as in its file name. */
    name: string;
  }> {
    return MIGRATIONS.map(({ id, name }) => ({ id, name }));
  },
};
