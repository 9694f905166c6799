/**
 * The SQL of a schema's life: the catalog reads migrate() decides with, the marks it leaves on
 * a schema, and the scripts of Migration.up() and Migration.down() for users who apply SQL with
 * their own migration tool. The decisions (refusing a foreign schema, "public") are migrate.ts's.
 */
import { quoteIdent } from "../names.js";
import { MIGRATIONS } from "./migrations.generated.js";
import { probe, statement } from "./query.js";

/** Migration `id`'s script for `schema`: several statements, sent as one simple query. */
export function sqlFor(id: number, schema: string): string {
  const migration = MIGRATIONS[id - 1]!;
  return migration.sql.replaceAll("{{schema}}", quoteIdent(schema));
}

function lockKey(schema: string): string {
  return `gen_durable:migrate:${schema}`;
}

/** Serialises migrations of one schema across processes (for the transaction). */
export const migrateLock = statement<{ schema: string }>("select pg_advisory_xact_lock(hashtext($1))", (a) => [
  lockKey(a.schema),
]);

/**
 * What marks a schema as gen-durable's: a comment that migrate() (or the SQL of
 * Migration.up()) puts on it. Schemas from before the mark are recognised by
 * their migrations table instead (see `recognise`).
 */
export const MARK = "gen-durable:";
/** The schema was created by gen-durable: Migration.down() drops it once its own objects are gone. */
export const CREATED_MARK = `${MARK} created by the gen-durable migrations; Migration.down() drops it`;
/** The schema existed, empty, before gen-durable's tables went in: Migration.down() keeps it. */
export const ADOPTED_MARK =
  `${MARK} holds the gen-durable tables; ` + "created by someone else, so Migration.down() keeps it";

/** A SQL string literal. */
function literal(text: string): string {
  return `'${text.replace(/'/g, "''")}'`;
}

const MIGRATIONS_TABLE = "(id integer primary key, name text not null, applied_at timestamptz not null default now())";

/**
 * What migrate() writes into a schema: the schema, its mark, the migrations table, each migration
 * and its record; and the record it reads back. The schema (quoted) is the only identifier.
 */
export function lifecycleQueries(schema: string) {
  const q = quoteIdent(schema);
  return {
    createSchema: probe(`create schema ${q}`),
    /** Marks the schema (MARK, CREATED_MARK or ADOPTED_MARK); a comment takes no bound value. */
    mark: (mark: string) => probe(`comment on schema ${q} is ${literal(mark)}`),
    createMigrationsTable: probe(`create table ${q}.migrations ${MIGRATIONS_TABLE}`),
    /** Applies migration `id` (its script, several statements). */
    apply: (id: number) => probe(sqlFor(id, schema)),
    record: statement<{ id: number; name: string }>(`insert into ${q}.migrations (id, name) values ($1, $2)`, (a) => [
      a.id,
      a.name,
    ]),
    /** The migrations table's rows, in order (checked against ours by migrate.ts). */
    applied: probe<{ id: number; name: string }>(`select id, name from ${q}.migrations order by id`),
  };
}

// Everything a schema can hold that makes it "not empty", by catalog.
const CONTENTS = `
  select pg_describe_object('pg_class'::regclass, oid, 0) as object from pg_class
    where relnamespace = $1 and relkind in ('r', 'p', 'v', 'm', 'f', 'S', 'c')
  union all select pg_describe_object('pg_proc'::regclass, oid, 0) from pg_proc where pronamespace = $1
  union all select pg_describe_object('pg_type'::regclass, oid, 0) from pg_type
    where typnamespace = $1 and typtype in ('b', 'd', 'e', 'r', 'm') and typcategory <> 'A'
  union all select pg_describe_object('pg_operator'::regclass, oid, 0) from pg_operator where oprnamespace = $1
  union all select pg_describe_object('pg_collation'::regclass, oid, 0) from pg_collation where collnamespace = $1
  union all select pg_describe_object('pg_conversion'::regclass, oid, 0) from pg_conversion where connamespace = $1
  union all select pg_describe_object('pg_extension'::regclass, oid, 0) from pg_extension where extnamespace = $1
  union all select pg_describe_object('pg_ts_config'::regclass, oid, 0) from pg_ts_config where cfgnamespace = $1
  union all select pg_describe_object('pg_ts_dict'::regclass, oid, 0) from pg_ts_dict where dictnamespace = $1`;

/** The schema, if it exists: whether the current role owns it, and its comment (the mark). */
export const namespace = statement<{ schema: string }, { oid: number; owned: boolean; mark: string | null }>(
  `
  select oid, pg_has_role(nspowner, 'MEMBER') as owned, obj_description(oid, 'pg_namespace') as mark
  from pg_namespace where nspname = $1`,
  (a) => [a.schema],
);

/** What the schema (by oid) holds; at most 11, to say why a schema is refused. */
export const schemaContents = statement<{ oid: number }, { object: string }>(
  `select object from (${CONTENTS}) c order by object limit 11`,
  (a) => [a.oid],
);

/** `table` is the instances table (a name, quoted, as a value); `n` is 5 when it is gen-durable's. */
export const instancesSignature = statement<{ table: string }, { n: number }>(
  `
  select count(*)::int as n from pg_attribute
  where attrelid = to_regclass($1) and not attisdropped
    and attname in ('machine', 'step', 'state', 'claim_token', 'lease_expires_at')`,
  (a) => [a.table],
);

/** The columns of `table` (a name, quoted, as a value) and their types; none when it does not exist. */
export const tableColumns = statement<{ table: string }, { name: string; type: string }>(
  `
  select attname as name, format_type(atttypid, atttypmod) as type from pg_attribute
  where attrelid = to_regclass($1) and attnum > 0 and not attisdropped`,
  (a) => [a.table],
);

// ---------------------------------------------------------------- Migration.up/down

/** Our own objects by kind, as the migrations create (and drop) them, plus the migrations table. */
function ownObjects(): Map<string, string[]> {
  const kinds = new Map<string, Set<string>>([["table", new Set(["migrations"])]]);
  const statement = new RegExp(
    /\b(create|drop)\s+(?:or\s+replace\s+)?/.source +
      /(table|view|materialized\s+view|function|procedure|type|domain|sequence)\s+/.source +
      /(?:if\s+(?:not\s+)?exists\s+)?\{\{schema\}\}\.([a-z_][a-z0-9_]*)/.source,
    "gi",
  );
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

/**
 * A plpgsql condition: the schema `s` (a variable) is gen-durable's, by its mark or its migrations and instances
 * tables.
 */
function oursCondition(): string {
  // Inside a string literal of the format() call: quotes doubled.
  const known = MIGRATIONS.map((m) => `(${m.id}, ''${m.name}'')`).join(", ");
  return `
  ours := coalesce(obj_description(ns, 'pg_namespace'), '') like ${literal(MARK + "%")};
  if not ours and (select count(*) from pg_attribute
                   where attrelid = to_regclass(format('%I.migrations', s)) and not attisdropped
                     and ((attname = 'id' and atttypid = 'integer'::regtype)
                          or (attname = 'name' and atttypid = 'text'::regtype))) = 2 then
    execute format('select count(*) > 0 and bool_and((id, name) in (${known}) or id > ${MIGRATIONS.length}) '
                   'and max(id) = count(*) from %I.migrations', s) into ours;
    ours := coalesce(ours, false) and (select count(*) from pg_attribute
      where attrelid = to_regclass(format('%I.instances', s))
      and attname in ('machine', 'step', 'state', 'claim_token', 'lease_expires_at') and not attisdropped) = 5;
  end if;`;
}

/** SQL that creates the schema from nothing and records every migration (Migration.up). */
export function upScript(schema: string): string {
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
  select string_agg(object, ', ') into held
  from (select object from (${CONTENTS.replaceAll("$1", "ns")}) c order by object limit 10) c;
  if held is not null then
    raise exception using errcode = 'object_not_in_prerequisite_state',
      message = format('gen-durable: schema %I already holds objects gen-durable did not create (%s): '
                       'Migration.up() creates the schema from nothing; to upgrade a gen-durable schema use migrate()',
                       s, held);
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
}

/** SQL that removes gen-durable's objects, and the schema when gen-durable created it (Migration.down). */
export function downScript(schema: string): string {
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
      message = format('gen-durable: schema %I is not gen-durable''s (it has neither gen-durable''s mark nor its '
                       'migrations table): nothing was dropped', s);
  end if;
  begin
${drops.join("\n")}
  exception when dependent_objects_still_exist then
    get stacked diagnostics detail = pg_exception_detail;
    raise exception using errcode = 'dependent_objects_still_exist',
      message = format('gen-durable: cannot drop the tables of schema %I: objects that are not gen-durable''s '
                       'depend on them (%s); drop or change those first. Nothing was dropped',
                       s, replace(detail, E'\\n', '; ')),
      detail = detail;
  end;
  -- The schema goes too when gen-durable created it (or predates the mark), may drop it, and nothing else is in it.
  if s <> 'public' and (mark = '' or mark = ${literal(CREATED_MARK)})
     and pg_has_role((select nspowner from pg_namespace where oid = ns), 'MEMBER') then
    begin
      execute format('drop schema %I restrict', s);
    exception when dependent_objects_still_exist then
      raise notice 'gen-durable: schema % kept: it still holds objects that are not gen-durable''s', s;
    end;
  end if;
end
$gen_durable_down$;`;
}
