/**
 * Queries on instances that clients make: insert, read, cancel, retry.
 * Text only; values are always bound parameters, and the schema (validated by
 * checkSchemaName) is the only identifier that enters the text.
 */
import type { ErrorRecord } from "../json.js";
import type { Instance, Transition } from "../instance.js";
import { quoteIdent } from "../names.js";
import type { Status } from "../status.js";
import { TERMINAL_SQL } from "../status.js";
import type { TraceCarrier } from "../telemetry/propagation.js";
import { machineRows } from "./by-machine.js";
import { doneTransitions } from "./done-transition.js";
import { statement } from "./query.js";

export const INSTANCE_COLUMNS =
  "id, machine, status, step, state, attempt, result, error, queue, priority, run_at, correlation_key, " +
  "concurrency_key, parent_id, inserted_at, updated_at, published, version";

/** A row of INSTANCE_COLUMNS as pg returns it (bigint ids as strings). */
export interface InstanceRow {
  id: string;
  machine: string;
  status: Status;
  step: string;
  state: unknown;
  attempt: number;
  result: unknown;
  error: ErrorRecord | null;
  queue: string;
  priority: number;
  run_at: Date;
  correlation_key: string | null;
  concurrency_key: string | null;
  parent_id: string | null;
  inserted_at: Date;
  updated_at: Date;
  published: Record<string, unknown> | null;
  version: number;
}

export function toInstance(r: InstanceRow): Instance {
  return {
    id: String(r.id),
    machine: r.machine,
    status: r.status,
    step: r.step,
    state: r.state,
    attempt: r.attempt,
    result: r.result,
    error: r.error,
    queue: r.queue,
    priority: r.priority,
    runAt: r.run_at,
    correlationKey: r.correlation_key,
    concurrencyKey: r.concurrency_key,
    parentId: r.parent_id === null ? null : String(r.parent_id),
    insertedAt: r.inserted_at,
    updatedAt: r.updated_at,
    published: r.published ?? {},
    version: r.version,
  };
}

/** A row of the `history` statement. */
export interface TransitionRow {
  at: Date;
  from_step: string | null;
  to_step: string | null;
  outcome: string;
  attempt: number;
  duration_ms: number | null;
  error: ErrorRecord | null;
  published: Record<string, unknown> | null;
}

export function toTransition(r: TransitionRow): Transition {
  return {
    at: r.at,
    fromStep: r.from_step,
    toStep: r.to_step,
    outcome: r.outcome,
    attempt: r.attempt,
    durationMs: r.duration_ms,
    ...(r.error ? { error: r.error } : {}),
    ...(r.published ? { published: r.published } : {}),
  };
}

/** A row of `lockLineage`: the instance or one of its ancestors, locked. */
export interface LineageRow {
  id: string;
  parent_id: string | null;
  status: Status;
  queue: string;
  joined: boolean;
  join_counted: boolean;
  children_from: string | null;
}

/** One instance to insert: a row of `insert`'s input recordset (runtime/insert.ts builds them, checked). */
export interface InsertRow {
  idx: number;
  machine: string;
  step: string;
  /** The state (a job's args) as JSON text, checked (json.ts checkJson): it goes into the statement as it is. */
  state: string;
  queue: string;
  priority: number;
  run_at: string | null;
  delay_ms: number | null;
  max_attempts: number | null;
  correlation_key: string | null;
  concurrency_key: string | null;
  /** Steps of the key that may run at once, when above 1 (null: 1). */
  concurrency_limit: number | null;
  parent_id: string | null;
  /** The trace context active where it was inserted (a spawned child: its parent's step), or null. */
  trace_context: TraceCarrier | null;
  /** Remembered for the idempotency window: a retried insert with it returns the instance it made. */
  idempotency_key: string | null;
  /** With a correlation key: what an instance with it, live or finished within the window, means. Null: "allow". */
  if_exists: "reuse" | "reject" | null;
  /** The machine definition's version, stored with the instance (see machine-typing.ts: upcasters). */
  version: number;
  /** The state has not met the machine's schema (the CLI's insert): checked when a node claims it. */
  unvalidated?: boolean;
}

/**
 * `insert`'s $1 (`rows`) and $4 (`shared`), built by hand as JSON. `shared` holds the fields a
 * batch's rows mostly have alike (the first row's machine, step, queue, priority and version); a
 * row carries only those that differ, and no null field (jsonb_to_recordset reads a missing key
 * as null; the statement takes a missing shared field from `shared`). The state goes in as the
 * text that was checked, not stringified again. A plain job's row is {"idx":…,"state":…}: a
 * tenth of its JSON.stringify, and Postgres parses a tenth as much.
 */
export function insertRowsJson(rows: readonly InsertRow[]): { rows: string; shared: string } {
  const first = rows[0];
  const shared =
    first === undefined
      ? "{}"
      : `{"machine":${JSON.stringify(first.machine)},"step":${JSON.stringify(first.step)},` +
        `"queue":${JSON.stringify(first.queue)},"priority":${first.priority},"version":${first.version}}`;
  const parts: string[] = new Array(rows.length);
  for (let i = 0; i < rows.length; i++) {
    const r = rows[i]!;
    let json = `{"idx":${r.idx},"state":${r.state}`;
    if (r.machine !== first!.machine) json += `,"machine":${JSON.stringify(r.machine)}`;
    if (r.step !== first!.step) json += `,"step":${JSON.stringify(r.step)}`;
    if (r.queue !== first!.queue) json += `,"queue":${JSON.stringify(r.queue)}`;
    if (r.priority !== first!.priority) json += `,"priority":${r.priority}`;
    if (r.version !== first!.version) json += `,"version":${r.version}`;
    if (r.run_at !== null) json += `,"run_at":${JSON.stringify(r.run_at)}`;
    if (r.delay_ms !== null) json += `,"delay_ms":${JSON.stringify(r.delay_ms)}`;
    if (r.max_attempts !== null) json += `,"max_attempts":${r.max_attempts}`;
    if (r.correlation_key !== null) json += `,"correlation_key":${JSON.stringify(r.correlation_key)}`;
    if (r.concurrency_key !== null) json += `,"concurrency_key":${JSON.stringify(r.concurrency_key)}`;
    if (r.concurrency_limit !== null) json += `,"concurrency_limit":${r.concurrency_limit}`;
    if (r.parent_id !== null) json += `,"parent_id":${JSON.stringify(r.parent_id)}`;
    if (r.trace_context !== null) json += `,"trace_context":${JSON.stringify(r.trace_context)}`;
    if (r.idempotency_key !== null) json += `,"idempotency_key":${JSON.stringify(r.idempotency_key)}`;
    if (r.if_exists !== null) json += `,"if_exists":${JSON.stringify(r.if_exists)}`;
    if (r.unvalidated) json += `,"unvalidated":true`;
    parts[i] = json + "}";
  }
  return { rows: `[${parts.join(",")}]`, shared };
}

/** What `insert` says of one input row (by its `idx`); a row missing was taken by a twin after the snapshot. */
export interface InsertedRow {
  idx: number;
  /** The new instance, or the existing one the row names (`inserted` false). */
  id: string;
  inserted: boolean;
  /** The new instance's queue; null for an existing one found by a remembered key. */
  queue: string | null;
  /** Inserted and due now: its queue is woken. */
  due: boolean;
  /** Refused by ifExists "reject": then nothing at all was inserted. */
  rejected: boolean;
}

/** engine.list's filter; null: any. */
export interface ListArgs {
  machine: string | null;
  statuses: readonly Status[] | null;
  queue: string | null;
  correlationKey: string | null;
  /** Only ids below this one (the previous page's last). */
  after: string | null;
  limit: number;
}

/** What `cancel` and `cancelDescendants` both take beside their instances. */
interface CancelCommon {
  /** The cancel's error record, as JSON. */
  error: string;
  /** JSON { machine: onCancel step } of the machines the cancelling engine routes to a cleanup step. */
  cleanups: string;
  /** NOTIFY channel for the queues of rows routed to their cleanup step, and for `notice`. */
  channel: string;
  /** The payload's prefix that tells nodes which running claims the cancel took away (see cancelTell). */
  notice: string;
}

export interface CancelArgs extends CancelCommon {
  id: string;
  /** Keys to take with the tree's own (met by an earlier try in a level below). */
  extraKeys: readonly string[];
}

export interface CancelDescendantsArgs extends CancelCommon {
  /** The instances whose descendants go: those the previous level cancelled. */
  parents: readonly string[];
  /** The keys the transaction holds, or null when each statement is its own transaction. */
  held: readonly string[] | null;
}

/** The instance a cancel locked, as it was before. */
export interface CancelTargetRow {
  status: Status;
  machine: string;
  /** The concurrency keys the statement took (the tree's live ones and the extra ones). */
  keys: string[];
  /** Already cleaning up after an earlier cancel. */
  cleaning: boolean;
  /** Routed now to its onCancel step. */
  routed: boolean;
  /**
   * Its claim's token when this cancel changed it: a step of that claim still running on a node
   * is aborted, and no later claim (the cleanup's) is (claim tokens only grow).
   */
  token: string | null;
}

export interface RetryArgs {
  id: string;
  /** NOTIFY channel: the retried instance's queue is woken with the commit. */
  channel: string;
  parentId: string | null;
  /** What the parent's join must do (see `retry`). */
  join: "none" | "count" | "reopen";
}

/**
 * What a cancel sets on a live row ($2: the cancel's error, $4: { machine: onCancel step } of the
 * machines the cancelling engine knows to clean up). Such a machine's instance becomes runnable at
 * that step, its attempts fresh, the cancel kept in cancel_requested (ctx.cancellation); its step
 * ends it cancelled (runtime/routes.ts). Any other ends cancelled now; a running step keeps its
 * lease, so its key stays held until its code settles or the lease expires (migration "cancel
 * keeps key"). A running step routed to cleanup gives its lease up: its outcome is fenced off.
 */
const CANCEL_SET = `
  status = case when $4::jsonb ? i.machine then 'runnable' else 'cancelled' end,
  step = coalesce($4::jsonb ->> i.machine, i.step),
  cancel_requested = case when $4::jsonb ? i.machine then $2::jsonb end,
  attempt = case when $4::jsonb ? i.machine then 0 else i.attempt end,
  run_at = case when $4::jsonb ? i.machine then now() else i.run_at end,
  error = case when $4::jsonb ? i.machine then i.error else $2::jsonb end,
  joined = case when $4::jsonb ? i.machine then false else i.joined end,
  awaited = case when $4::jsonb ? i.machine then null else i.awaited end,
  await_spec = null,
  leased_by = case when i.status = 'running' and not $4::jsonb ? i.machine then i.leased_by end,
  lease_expires_at = case when i.status = 'running' and not $4::jsonb ? i.machine then i.lease_expires_at end,
  updated_at = now()`;
/**
 * Queues to wake on every node with the commit ($5: channel): of rows routed to their cleanup step,
 * and of rows a claim skipped meanwhile because this statement locked them and left them runnable:
 * those sharing a key with a changed row (the key's row was locked) and `held` (rows locked, not changed).
 */
const cancelWake = (s: string, held = "") => `woke as (
  select count(pg_notify($5::text, q.queue)) as n
  from (
    select queue from changed where status = 'runnable'
    union select k.queue from ${s}.instances k
    where k.status = 'runnable' and k.concurrency_key in (select concurrency_key from changed)
    ${held}) q)`;
/** The history row's to_step and outcome for a cancelled row: its cleanup step when routed to one. */
const CANCEL_TO =
  "case when status = 'runnable' then cleanup end, " +
  "case when status = 'runnable' then 'cancelling' else 'cancelled' end";

/**
 * Tells every node, with the commit, which running claims the cancel took away: $6 (`notice`,
 * runtime/cancel-notice.ts) and "id:token" pairs, at most 150 to a notification (a payload holds
 * under 8,000 bytes). Each node aborts the steps of those claims it runs. Sent with the commit, it
 * aborts nothing when a caller's transaction rolls the cancel back.
 */
const cancelTell = `told as (
  select count(pg_notify($5::text, $6::text || x.claims)) as n
  from (
    select string_agg(c.id || ':' || c.claim_token, ' ') as claims
    from (select id, claim_token, (row_number() over (order by id) - 1) / 150 as chunk from changed where was_running) c
    group by c.chunk) x)`;

/**
 * The INSERT of `insert`'s input rows that match `where` (without its ON CONFLICT and RETURNING).
 * jsonb_to_recordset reads a JSON null as SQL NULL: a state of null (the schema accepted it) is
 * stored as JSON null.
 */
const insertInstances = (s: string, where: string) => `
        insert into ${s}.instances (id, machine, step, state, queue, priority, run_at, max_attempts, correlation_key,
                                    concurrency_key, concurrency_limit, parent_id, trace_context, version, unvalidated)
        select id, machine, step, coalesce(state, 'null'::jsonb), queue, priority,
               coalesce(run_at, now() + make_interval(secs => coalesce(delay_ms, 0) / 1000.0)),
               max_attempts, correlation_key, concurrency_key, concurrency_limit, parent_id, trace_context,
               coalesce(version, 1), coalesce(unvalidated, false)
        from input where ${where}
        -- One order for every insert, so concurrent batches take key locks (the correlation
        -- key's unique entry, the concurrency key's row in its trigger) in the same order.
        order by correlation_key, concurrency_key collate "C" nulls last, idx`;

/** `insert`'s guard on the rows it inserts: after the key locks, none remembered, none rejected. */
const ALLOWED = `(select n from keys_locked) >= 0
          and id not in (select id from prior where existing is not null)
          and not exists (select 1 from prior where rejected)`;

/** `insert`'s input rows, with their ids drawn up front ($1: the rows, `shared`: the fields they share). */
const insertInput = (s: string, shared: string) => `
      input as (
        select x.idx, coalesce(x.machine, d.machine) as machine, coalesce(x.step, d.step) as step, x.state,
               coalesce(x.queue, d.queue) as queue, coalesce(x.priority, d.priority) as priority, x.run_at, x.delay_ms,
               x.max_attempts, x.correlation_key, x.concurrency_key, x.concurrency_limit, x.parent_id,
               x.idempotency_key, x.if_exists, x.trace_context, coalesce(x.version, d.version) as version,
               x.unvalidated,
               nextval((select pg_get_serial_sequence('${s}.instances', 'id')::regclass)) as id
        from jsonb_to_record(${shared}::jsonb)
               as d(machine text, step text, queue text, priority integer, version integer)
        cross join jsonb_to_recordset($1::jsonb) as x(
          idx integer, machine text, step text, state jsonb, queue text, priority integer,
          run_at timestamptz, delay_ms double precision, max_attempts integer,
          correlation_key text, concurrency_key text, concurrency_limit integer, parent_id bigint, idempotency_key text,
          if_exists text, trace_context jsonb, version integer, unvalidated boolean)
      )`;

/** NOTIFY `channel` once per queue that got due rows from `ins`, or not at all when `channel` is null. */
const notifyDue = (channel: string) => `
      woke as (
        select count(pg_notify(${channel}::text, q.queue)) as n
        from (select distinct queue from ins where due and ${channel}::text is not null) q
      )`;

/**
 * The machine of an instance, finished or not, read without a lock (it never changes): a move
 * checks its input with it before it locks the row, and a refused signal names it.
 */
export const machineOf = (s: string) =>
  statement<{ id: string }, { machine: string }>(`select machine from ${s}.instances where id = $1`, (a) => [a.id]);

/** Whether `insertPlain` may insert these rows: no key of any kind, so nothing to lock, look up or remember. */
export function plainRows(rows: readonly InsertRow[]): boolean {
  return rows.every(
    (row) =>
      row.correlation_key === null &&
      row.concurrency_key === null &&
      row.idempotency_key === null &&
      row.if_exists === null &&
      row.parent_id === null,
  );
}

export function instanceQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /**
     * Bulk insert, one statement whatever the batch size. Ids are drawn from the
     * sequence up front so each result maps back to its input row; a live
     * correlation key conflicts and returns the existing id instead. Rows whose
     * existing twin was committed after this statement's snapshot come back
     * missing: the caller retries them (a new snapshot sees the twin).
     * Remembered keys (the migration "sql api"): a row whose idempotency key is
     * remembered, or whose correlation key has an instance live or finished
     * within the window and ifExists "reuse" or "reject", inserts nothing and
     * returns that instance (`existing`); when any row is rejected, no row is
     * inserted at all and the rejected rows come back with `rejected`. Both
     * lookups run after the keys' locks with a fresh snapshot (VOLATILE
     * functions), and the same function serves the SQL API's insert.
     * $1 (`rows`): jsonb array of rows; $2 (`channel`): NOTIFY channel, or null to leave waking to
     * the caller; $3 (`windowMs`): the window in ms; $4: the fields rows share (see insertRowsJson).
     */
    insert: statement<{ rows: readonly InsertRow[]; channel: string | null; windowMs: number }, InsertedRow>(
      `
      with ${insertInput(s, "$4")},
      -- The batch's concurrency keys (and its remembered keys' locks), in the one global order, before any
      -- row (see lock_keys).
      keys_locked as (
        select ${s}.lock_keys(array(
          select concurrency_key from input where concurrency_key is not null
          union all select 'idempotency:' || idempotency_key from input where idempotency_key is not null
          union all select 'correlation:' || correlation_key from input where if_exists in ('reuse', 'reject'))) as n
      ),
      prior as (
        select p.id, p.idx, p.correlation_key, p.existing, p.by_idempotency,
               p.existing is not null and p.by_idempotency is null and p.if_exists = 'reject' as rejected
        from (
          select x.id, x.idx, x.correlation_key, x.if_exists, r.by_idempotency,
                 coalesce(r.by_idempotency, case when x.if_exists in ('reuse', 'reject')
                   then ${s}.correlation_prior(x.correlation_key, $3::float8) end) as existing
          from input x
          cross join lateral (select case when x.idempotency_key is not null
            then ${s}.remembered_instance(x.idempotency_key) end as by_idempotency) r
          where (x.idempotency_key is not null or x.if_exists in ('reuse', 'reject'))
            and (select n from keys_locked) >= 0
        ) p
      ),
      -- The rows with a correlation key: a live twin's unique entry conflicts.
      ins_keyed as (
        ${insertInstances(s, `correlation_key is not null and ${ALLOWED}`)}
        on conflict (correlation_key) where correlation_key is not null and status not in ${TERMINAL_SQL} do nothing
        -- take_inbox (see the migration) moves signals kept for the key into the new mailbox.
        returning id, queue, run_at <= now() as due, ${s}.take_inbox(correlation_key, id) as inbox
      ),
      -- The rows without: nothing can conflict, so no speculative insertion (its extra WAL record and
      -- lock per row).
      ins_plain as (
        ${insertInstances(s, `correlation_key is null and ${ALLOWED}`)}
        returning id, queue, run_at <= now() as due
      ),
      -- Read in this order: the keyed rows are inserted first, as "order by correlation_key nulls last" had it.
      ins as (
        select id, queue, due from ins_keyed
        union all select id, queue, due from ins_plain
      ),
      results as (
        select x.idx, x.id as input_id, ins.id, true as inserted, ins.queue, ins.due, false as rejected
          from input x join ins on ins.id = x.id
        union all
        select p.idx, p.id, p.existing, false, null, false, p.rejected from prior p where p.existing is not null
        union all
        select x.idx, x.id, e.id, false, e.queue, false, false
          from input x join ${s}.instances e
            on e.correlation_key = x.correlation_key and e.status not in ${TERMINAL_SQL}
          where x.correlation_key is not null and not exists (select 1 from ins where ins.id = x.id)
            and x.id not in (select id from prior where existing is not null)
            and not exists (select 1 from prior where rejected)
      ),
      remembered as (
        insert into ${s}.remembered_keys as r (kind, key, instance_id, expires_at)
        select 'idempotency', x.idempotency_key, res.id, now() + $3::float8 * interval '1 millisecond'
        from input x join results res on res.input_id = x.id
        where x.idempotency_key is not null and not exists (select 1 from prior where rejected)
          and x.id not in (select id from prior where by_idempotency is not null)
        order by x.idempotency_key
        on conflict (kind, key) do update set instance_id = excluded.instance_id, expires_at = excluded.expires_at
      ),
      ${notifyDue("$2")}
      select idx, id::text as id, inserted, queue, due, rejected from results
      union all
      -- never a row: makes the statement evaluate the NOTIFYs
      select -1, null, null, null, null, null from woke where n < 0`,
      (a) => {
        const { rows, shared } = insertRowsJson(a.rows);
        return [rows, a.channel, a.windowMs, shared];
      },
      { prepare: true },
    ),

    /**
     * `insert` for rows without any key (plainRows): no key to lock, no earlier instance to look
     * up, nothing to remember, so none of `insert`'s other parts; a single job's insert ran 0.93 ms
     * on the server through them. $1 (`rows`), $2 (`channel`) and $3 (`shared`) as `insert`'s $1,
     * $2 and $4.
     */
    insertPlain: statement<{ rows: readonly InsertRow[]; channel: string | null }, InsertedRow>(
      `
      with ${insertInput(s, "$3")},
      ins as (
        ${insertInstances(s, "true")}
        returning id, queue, run_at <= now() as due
      ),
      ${notifyDue("$2")}
      select x.idx, ins.id::text as id, true as inserted, ins.queue, ins.due, false as rejected
      from input x join ins on ins.id = x.id
      union all
      -- never a row: makes the statement evaluate the NOTIFYs
      select -1, null, null, null, null, null from woke where n < 0`,
      (a) => {
        const { rows, shared } = insertRowsJson(a.rows);
        return [rows, a.channel, shared];
      },
      { prepare: true },
    ),

    get: statement<{ id: string }, InstanceRow>(`select ${INSTANCE_COLUMNS} from ${s}.instances where id = $1`, (a) => [
      a.id,
    ]),
    getByKey: statement<{ correlationKey: string }, InstanceRow>(
      `select ${INSTANCE_COLUMNS} from ${s}.instances where correlation_key = $1
               order by (status not in ${TERMINAL_SQL}) desc, id desc limit 1`,
      (a) => [a.correlationKey],
    ),

    /** Newest first; filtered by machine, through the branches of by-machine.ts. */
    list: statement<ListArgs, InstanceRow>(
      `
      select ${INSTANCE_COLUMNS} from (
      ${machineRows(s, {
        machine: "$1",
        anyWhenNull: true,
        statuses: "$2::text[]",
        columns: INSTANCE_COLUMNS,
        where: `($2::text[] is null or status = any($2)) and ($3::text is null or queue = $3)
          and ($4::text is null or correlation_key = $4) and ($5::bigint is null or id < $5)`,
        order: { by: "id desc", limit: "$6" },
      })}
      ) i
      order by id desc limit $6`,
      (a) => [a.machine, a.statuses, a.queue, a.correlationKey, a.after, a.limit],
    ),

    /**
     * An instance's transitions, oldest first. A done kept in the row (see doneTransitions) goes
     * where its history row would have been: after every earlier transition, before the
     * `published` row its own commit wrote (same transaction, so `at` no earlier than the done's).
     */
    history: statement<{ id: string }, TransitionRow>(
      `
      with done as (${doneTransitions(s, "i.id = $1")})
      select at, from_step, to_step, outcome, attempt, duration_ms, error, published from (
        select case when t.outcome = 'published' and t.at >= (select at from done) then 2 else 0 end as rank, t.id,
               t.at, t.from_step, t.to_step, t.outcome, t.attempt, t.duration_ms, t.error, t.published
        from ${s}.transitions t where t.instance_id = $1
        union all
        select 1, 0, d.* from done d
      ) h order by rank, id`,
      (a) => [a.id],
    ),

    /**
     * Terminal `cancelled` unless already terminal: locks the instance, and
     * cancels it if it is live. Returns its status before. Its descendants go
     * in later statements (cancelDescendants), so that their snapshot is taken
     * after this lock was granted: a spawn that held the row committed its
     * children before that, and one that comes after is fenced off (the row is
     * no longer running). The concurrency keys of the instance and of the live
     * descendants it has now, and the keys $3 (`extraKeys`), come first, in the one global
     * order (lock_keys); they are returned.
     */
    cancel: statement<CancelArgs, CancelTargetRow>(
      `
      -- cancel: the instance
      with recursive tree(id) as (
        select $1::bigint
        union all
        select c.id from ${s}.instances c join tree t on c.parent_id = t.id
      ),
      keys as (
        select array(
          select distinct k from (
            select concurrency_key as k from ${s}.instances
            where id in (select id from tree) and status not in ${TERMINAL_SQL}
            union all select unnest($3::text[])) x
          where k is not null) as list
      ),
      keys_locked as (select ${s}.lock_keys((select list from keys)) as n),
      target as (
        select id, status, step, attempt, machine, queue, cancel_requested is not null as cleaning from ${s}.instances
        where id = $1 and (select n from keys_locked) >= 0
        for update
      ),
      changed as (
        update ${s}.instances i
        set ${CANCEL_SET}
        from target t where i.id = t.id and t.status not in ${TERMINAL_SQL} and not t.cleaning
        returning i.id, t.step, i.attempt, i.step as cleanup, i.status, i.queue, i.concurrency_key, i.claim_token,
                  t.status = 'running' as was_running
      ),
      -- One already cleaning up is locked and left as it is.
      ${cancelWake(s, "union select queue from target where cleaning and status = 'runnable'")},
      ${cancelTell},
      history as (
        insert into ${s}.transitions (instance_id, from_step, to_step, outcome, attempt, error)
        select id, step, ${CANCEL_TO}, attempt, $2::jsonb from changed
      )
      select status, machine, (select list from keys) as keys, cleaning,
             exists (select 1 from changed where changed.status = 'runnable') as routed,
             (select claim_token::text from changed) as token
      from target, woke, told where woke.n >= 0 and told.n >= 0`,
      (a) => [a.id, a.error, a.extraKeys, a.cleanups, a.channel, a.notice],
    ),

    /**
     * Cancels the live descendants of the instances $1 (`parents`, just cancelled by this
     * transaction), whatever their depth; returns their ids (`cancelled`) and, in the same order, the
     * tokens of their claims as the cancel found them (`tokens`: see CancelTargetRow). They are locked in
     * id order, parents before children (a child's id is always greater), the
     * order cancel and retry lock a tree in. A descendant whose own spawn holds
     * its row is waited for and cancelled as it is then; the children that spawn
     * committed are not in this statement's snapshot: the caller runs this
     * again on the ids it returned (`cancelled`), until it returns none.
     *
     * Keys: $3 (`held`) are the concurrency keys the transaction holds from earlier
     * statements (with their rows). A live descendant whose key is not among
     * them (a child spawned meanwhile) cannot have it taken now without
     * breaking the one key lock order: then nothing is locked and the key is
     * returned in `missing`, for the caller to start over taking it first.
     * With $3 null (nothing held: each statement its own transaction), the
     * keys are taken here, before any row.
     */
    cancelDescendants: statement<CancelDescendantsArgs, { missing: string[]; cancelled: string[]; tokens: string[] }>(
      `
      -- cancel: its live descendants
      with recursive tree(id) as (
        select c.id from ${s}.instances c where c.parent_id = any($1::bigint[])
        union all
        select c.id from ${s}.instances c join tree t on c.parent_id = t.id
      ),
      needed as (
        select array(
          select distinct concurrency_key from ${s}.instances
          where id in (select id from tree) and status not in ${TERMINAL_SQL} and concurrency_key is not null
            and ($3::text[] is null or concurrency_key <> all($3::text[]))) as list
      ),
      keys_locked as (select ${s}.lock_keys(case when $3::text[] is null then (select list from needed) end) as n),
      live as (
        select i.id, i.step, i.status from ${s}.instances i
        -- One already cleaning up after a cancel (onCancel) finishes that.
        where i.id in (select id from tree) and i.status not in ${TERMINAL_SQL} and (select n from keys_locked) >= 0
          and i.cancel_requested is null
          and ($3::text[] is null or cardinality((select list from needed)) = 0)
        order by i.id
        for update of i
      ),
      changed as (
        update ${s}.instances i
        set ${CANCEL_SET}
        from live l where i.id = l.id
        returning i.id, l.step, i.attempt, i.step as cleanup, i.status, i.queue, i.concurrency_key, i.claim_token,
                  l.status = 'running' as was_running
      ),
      ${cancelWake(s)},
      ${cancelTell},
      history as (
        insert into ${s}.transitions (instance_id, from_step, to_step, outcome, attempt, error)
        select id, step, ${CANCEL_TO}, attempt, $2::jsonb from changed
      )
      select case when $3::text[] is null then '{}'::text[] else (select list from needed) end as missing,
             array(select id::text from changed order by id) as cancelled,
             array(select claim_token::text from changed order by id) as tokens
      from woke, told where woke.n >= 0 and told.n >= 0`,
      (a) => [a.parents, a.error, a.held, a.cleanups, a.channel, a.notice],
    ),

    /**
     * The instance $1 (`id`) and its ancestors, locked root first (the order cancel
     * takes them in, so a retry and a cancel of the same tree serialise), as
     * they are once locked; their concurrency keys first (lock_keys: the retry
     * changes the instance's key and may change its parent's).
     */
    lockLineage: statement<{ id: string }, LineageRow>(
      `
      -- retry: the instance and its ancestors
      with recursive lineage(id) as (
        select $1::bigint
        union
        select i.parent_id from ${s}.instances i join lineage l on i.id = l.id where i.parent_id is not null
      ),
      keys_locked as (
        select ${s}.lock_keys(array(
          select concurrency_key from ${s}.instances where id in (select id from lineage))) as n
      )
      select i.id::text as id, i.parent_id::text as parent_id, i.status, i.queue, i.joined, i.join_counted,
             i.children_from::text as children_from
      from ${s}.instances i where i.id in (select id from lineage) and (select n from keys_locked) >= 0
      order by i.id
      for update of i`,
      (a) => [a.id],
    ),

    /**
     * A failed instance runs its failed step again, with fresh attempts. Run
     * with its lineage locked (lockLineage). $3, $4 (`parentId`, `join`): its parent and what the
     * parent's join must do: "none"; "count" (the sweep had counted the child:
     * one more to wait for); "reopen" (the parent had joined but its join step
     * had not started: back to joining, waiting for this child).
     */
    retry: statement<RetryArgs, { retried: number; woke: string }>(
      `
      with changed as (
        update ${s}.instances i
        set status = 'runnable', attempt = 0, run_at = now(), updated_at = now(),
            join_counted = case when $4::text = 'none' then i.join_counted else false end
        where i.id = $1 and i.status = 'failed'
        returning i.id, i.step, i.queue
      ),
      history as (
        insert into ${s}.transitions (instance_id, from_step, to_step, outcome, attempt)
        select id, step, step, 'retried', 0 from changed
      ),
      parent as (
        update ${s}.instances p
        set children_pending = greatest(coalesce(p.children_pending, 0), 0) + 1,
            status = 'joining', joined = false, updated_at = now()
        where p.id = $3::bigint and $4::text <> 'none' and exists (select 1 from changed)
        returning p.id, p.step
      ),
      rejoined as (
        insert into ${s}.transitions (instance_id, from_step, to_step, outcome)
        select id, step, step, 'rejoin' from parent where $4::text = 'reopen'
      ),
      woke as (select count(pg_notify($2::text, queue)) as n from changed)
      select (select count(*) from changed)::int as retried, (select n from woke) as woke`,
      (a) => [a.id, a.channel, a.parentId, a.join],
    ),
  };
}

export type InstanceQueries = ReturnType<typeof instanceQueries>;
