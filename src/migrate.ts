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

/**
 * What marks a schema as gen-durable's: a comment that migrate() (or the SQL of
 * Migration.up()) puts on it. Schemas from before the mark are recognised by
 * their migrations table instead (see `recognise`).
 */
const MARK = "gen-durable:";
/** The schema was created by gen-durable: Migration.down() drops it once its own objects are gone. */
const CREATED_MARK = `${MARK} created by the gen-durable migrations; Migration.down() drops it`;
/** The schema existed, empty, before gen-durable's tables went in: Migration.down() keeps it. */
const ADOPTED_MARK = `${MARK} holds the gen-durable tables; created by someone else, so Migration.down() keeps it`;

/** A SQL string literal. */
function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

const MIGRATIONS_TABLE = "(id integer primary key, name text not null, applied_at timestamptz not null default now())";

/** Applies every pending migration; returns the ids it applied (empty when already current). */
export async function migrate(options: MigrateOptions): Promise<number[]> {
  if (typeof options !== "object" || options === null) throw new ConfigError("migrate: options are required");
  rejectUnknownKeys(options, ["connectionString", "pool", "schema"], "migrate", (m) => new ConfigError(m));
  const schema = checkSchemaName(options.schema ?? DEFAULT_SCHEMA, (m) => new ConfigError(`migrate: ${m}`));
  const { pool, owned } = openPool(options, "migrate", "gen-durable-migrate", 1);
  const q = quoteIdent(schema);
  try {
    return await withTransaction(pool, async (client) => {
      await client.query("select pg_advisory_xact_lock(hashtext($1))", [lockKey(schema)]);
      // Only what is missing is created: a role that owns the schema (or may create in
      // it) but may not create schemas in the database migrates a schema someone made for it.
      const found = await inspect(client, schema);
      if (!found.exists) {
        if (schema === "public") throw new ConfigError(publicRefused("migrate"));
        await client.query(`create schema ${q}`);
        await client.query(`comment on schema ${q} is ${literal(CREATED_MARK)}`);
      } else if (!found.ours) {
        if (schema === "public") throw new ConfigError(publicRefused("migrate"));
        if (found.objects.length > 0) throw new ConfigError(foreignRefused("migrate", schema, found.objects));
        // Empty: someone made it for us. Marked when we may, so down() keeps it.
        if (found.owned) await client.query(`comment on schema ${q} is ${literal(ADOPTED_MARK)}`);
      }
      if (!found.migrationsTable) await client.query(`create table ${q}.migrations ${MIGRATIONS_TABLE}`);
      const current = await currentVersion(client, schema);
      const applied: number[] = [];
      for (const migration of MIGRATIONS.slice(current)) {
        await client.query(sqlFor(migration.id, schema));
        await client.query(`insert into ${q}.migrations (id, name) values ($1, $2)`, [migration.id, migration.name]);
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
    `${where}: schema "public" is refused: it is the database's shared default schema, where the application's own tables ` +
    `(and, often, a table called migrations) live; gen-durable keeps its tables in a schema of its own: leave schema unset ` +
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

// Everything a schema can hold that makes it "not empty", by catalog.
const CONTENTS = `
  select pg_describe_object('pg_class'::regclass, oid, 0) as object from pg_class where relnamespace = $1 and relkind in ('r', 'p', 'v', 'm', 'f', 'S', 'c')
  union all select pg_describe_object('pg_proc'::regclass, oid, 0) from pg_proc where pronamespace = $1
  union all select pg_describe_object('pg_type'::regclass, oid, 0) from pg_type where typnamespace = $1 and typtype in ('b', 'd', 'e', 'r', 'm') and typcategory <> 'A'
  union all select pg_describe_object('pg_operator'::regclass, oid, 0) from pg_operator where oprnamespace = $1
  union all select pg_describe_object('pg_collation'::regclass, oid, 0) from pg_collation where collnamespace = $1
  union all select pg_describe_object('pg_conversion'::regclass, oid, 0) from pg_conversion where connamespace = $1
  union all select pg_describe_object('pg_extension'::regclass, oid, 0) from pg_extension where extnamespace = $1
  union all select pg_describe_object('pg_ts_config'::regclass, oid, 0) from pg_ts_config where cfgnamespace = $1
  union all select pg_describe_object('pg_ts_dict'::regclass, oid, 0) from pg_ts_dict where dictnamespace = $1`;

async function inspect(client: pg.ClientBase, schema: string): Promise<Found> {
  const { rows } = await client.query<{ oid: number; owned: boolean; mark: string | null }>(
    `select oid, pg_has_role(nspowner, 'MEMBER') as owned, obj_description(oid, 'pg_namespace') as mark from pg_namespace where nspname = $1`,
    [schema],
  );
  const namespace = rows[0];
  if (!namespace) return { exists: false, owned: false, ours: false, migrationsTable: false, objects: [] };
  const contents = await client.query<{ object: string }>(
    `select object from (${CONTENTS}) c order by object limit 11`,
    [namespace.oid],
  );
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
  const { rows } = await client.query<{ n: number }>(
    `select count(*)::int as n from pg_attribute where attrelid = to_regclass($1) and attname in ('machine', 'step', 'state', 'claim_token', 'lease_expires_at') and not attisdropped`,
    [`${quoteIdent(schema)}.instances`],
  );
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
  const table = `${quoteIdent(schema)}.migrations`;
  const columns = await client.query<{ name: string; type: string }>(
    `select attname as name, format_type(atttypid, atttypmod) as type from pg_attribute where attrelid = to_regclass($1) and attnum > 0 and not attisdropped`,
    [table],
  );
  if (columns.rows.length === 0) return undefined;
  const types = new Map(columns.rows.map((c) => [c.name, c.type]));
  if (types.get("id") !== "integer" || types.get("name") !== "text")
    return { version: 0, foreign: "its columns are not id integer, name text" };
  const { rows } = await client.query<{ id: number; name: string }>(`select id, name from ${table} order by id`);
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

/** Our own objects by kind, as the migrations create (and drop) them, plus the migrations table. */
function ownObjects(): Map<string, string[]> {
  const kinds = new Map<string, Set<string>>([["table", new Set(["migrations"])]]);
  const statement =
    /\b(create|drop)\s+(?:or\s+replace\s+)?(table|view|materialized\s+view|function|procedure|type|domain|sequence)\s+(?:if\s+(?:not\s+)?exists\s+)?\{\{schema\}\}\.([a-z_][a-z0-9_]*)/gi;
  for (const migration of MIGRATIONS) {
    const code = migration.sql.replace(/--[^\n]*/g, "");
    for (const [, verb, kind, name] of code.matchAll(statement)) {
      const k = kind!.toLowerCase().replace(/\s+/g, " ");
      if (!kinds.has(k)) kinds.set(k, new Set());
      if (verb!.toLowerCase() === "create") kinds.get(k)!.add(name!);
      else kinds.get(k)!.delete(name!);
    }
  }
  return new Map([...kinds].map(([k, names]) => [k, [...names].sort()]));
}

/** Drop order: what may depend on the next kinds first. */
const DROP_ORDER = ["materialized view", "view", "table", "sequence", "function", "procedure", "domain", "type"];

/** A plpgsql condition: the schema `s` (a variable) is gen-durable's, by its mark or its migrations and instances tables. */
function oursCondition(): string {
  // Inside a string literal of the format() call: quotes doubled.
  const known = MIGRATIONS.map((m) => `(${m.id}, ''${m.name}'')`).join(", ");
  return `
  ours := coalesce(obj_description(ns, 'pg_namespace'), '') like ${literal(MARK + "%")};
  if not ours and (select count(*) from pg_attribute where attrelid = to_regclass(format('%I.migrations', s)) and not attisdropped
                   and ((attname = 'id' and atttypid = 'integer'::regtype) or (attname = 'name' and atttypid = 'text'::regtype))) = 2 then
    execute format('select count(*) > 0 and bool_and((id, name) in (${known}) or id > ${MIGRATIONS.length}) and max(id) = count(*) from %I.migrations', s) into ours;
    ours := coalesce(ours, false) and (select count(*) from pg_attribute where attrelid = to_regclass(format('%I.instances', s))
      and attname in ('machine', 'step', 'state', 'claim_token', 'lease_expires_at') and not attisdropped) = 5;
  end if;`;
}

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
    const q = quoteIdent(schema);
    return [
      `do $gen_durable_up$
declare
  s constant text := '${schema}';
  ns oid;
  held text;
begin
  select oid into ns from pg_namespace where nspname = s;
  if ns is null then
    execute format('create schema %I', s);
    execute format('comment on schema %I is %L', s, ${literal(CREATED_MARK)});
    return;
  end if;
  select string_agg(object, ', ') into held from (select object from (${CONTENTS.replaceAll("$1", "ns")}) c order by object limit 10) c;
  if held is not null then
    raise exception using errcode = 'object_not_in_prerequisite_state',
      message = format('gen-durable: schema %I already holds objects gen-durable did not create (%s): Migration.up() creates the schema from nothing; to upgrade a gen-durable schema use migrate()', s, held);
  end if;
  if pg_has_role((select nspowner from pg_namespace where oid = ns), 'MEMBER') then
    execute format('comment on schema %I is %L', s, ${literal(ADOPTED_MARK)});
  end if;
end
$gen_durable_up$;`,
      `create table ${q}.migrations ${MIGRATIONS_TABLE};`,
      ...MIGRATIONS.map(
        (m) => `${sqlFor(m.id, schema)}\ninsert into ${q}.migrations (id, name) values (${m.id}, '${m.name}');`,
      ),
    ].join("\n");
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
    const objects = ownObjects();
    const drops = DROP_ORDER.filter((kind) => (objects.get(kind) ?? []).length > 0).map(
      (kind) =>
        `    drop ${kind} if exists ${objects
          .get(kind)!
          .map((name) => `${quoteIdent(schema)}.${name}`)
          .join(", ")} restrict;`,
    );
    return `do $gen_durable_down$
declare
  s constant text := '${schema}';
  ns oid;
  ours boolean;
  mark text;
  detail text;
begin
  select oid, coalesce(obj_description(oid, 'pg_namespace'), '') into ns, mark from pg_namespace where nspname = s;
  if ns is null then
    return;
  end if;${oursCondition()}
  if not ours then
    raise exception using errcode = 'object_not_in_prerequisite_state',
      message = format('gen-durable: schema %I is not gen-durable''s (it has neither gen-durable''s mark nor its migrations table): nothing was dropped', s);
  end if;
  begin
${drops.join("\n")}
  exception when dependent_objects_still_exist then
    get stacked diagnostics detail = pg_exception_detail;
    raise exception using errcode = 'dependent_objects_still_exist',
      message = format('gen-durable: cannot drop the tables of schema %I: objects that are not gen-durable''s depend on them (%s); drop or change those first. Nothing was dropped', s, replace(detail, E'\\n', '; ')),
      detail = detail;
  end;
  -- The schema goes too when gen-durable created it (or predates the mark), may drop it, and nothing else is in it.
  if s <> 'public' and (mark = '' or mark = ${literal(CREATED_MARK)}) and pg_has_role((select nspowner from pg_namespace where oid = ns), 'MEMBER') then
    begin
      execute format('drop schema %I restrict', s);
    exception when dependent_objects_still_exist then
      raise notice 'gen-durable: schema % kept: it still holds objects that are not gen-durable''s', s;
    end;
  end if;
end
$gen_durable_down$;`;
  },
  /** The numbered migrations, oldest first. */
  list(): ReadonlyArray<{ id: number; name: string }> {
    return MIGRATIONS.map(({ id, name }) => ({ id, name }));
  },
};
