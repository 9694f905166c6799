/**
 * The hot path: claim runnable rows, renew leases, commit outcomes, release and
 * reap. Every write after a claim is fenced on (id, claim_token, status =
 * 'running'), so an execution whose lease was lost updates nothing.
 */
import type { ErrorRecord } from "../json.js";
import { quoteIdent } from "../names.js";
import type { Status } from "../status.js";
import { statement } from "./query.js";

/** A row as the claim returns it (the columns of the function claim, migration 21). */
export interface ClaimedRow {
  id: string;
  machine: string;
  step: string;
  state: unknown;
  attempt: number;
  max_attempts: number | null;
  claim_token: string;
  correlation_key: string | null;
  /** `traceContext`: the sender's, when one was active (not shown to the step; its span links to it). */
  awaited: Array<{ id: string; event: string; payload: unknown; insertedAt: string; traceContext?: unknown }> | null;
  /** This step is a join: ctx.children is loaded for it. */
  joined: boolean;
  parent_id: string | null;
  /** When the instance was inserted, in epoch milliseconds (ctx.insertedAt). */
  inserted_ms: number;
  queue: string;
  error: ErrorRecord | null;
  concurrency_key: string | null;
  /** The rate limit this step waited in line for (it was postponed); null when it did not wait. */
  rate_limited: string | null;
  /** Claimed into the node's buffer, uncharged: its outcome or start mark counts the attempt (Leases.markStarted). */
  claimed_ahead: boolean;
  /** Inserted from SQL and not yet checked against the machine's schema (runtime/sql-api.ts). */
  unvalidated?: boolean;
  /** The trace context active where the instance was inserted (see telemetry/propagation.ts), or null. */
  trace_context: unknown;
  /** The version of the machine definition that wrote the state (older ones are upcast before the step runs). */
  version: number;
  /** Set once the instance was routed to its onFailure step (ctx.failure). */
  failure?: { error: ErrorRecord; step: string; attempts: number } | null;
  /** Set while the instance runs its onCancel step: the cancel's error record. */
  cancel_requested?: ErrorRecord | null;
  /** How the await that led to this step ended. */
  resumed_by?: "signal" | "timeout" | null;
}

/** What `claim` takes ($1 … $7, in that order). */
export interface ClaimArgs {
  queue: string;
  /** The machines this node runs. */
  machines: readonly string[];
  /** How many rows to claim at most. */
  want: number;
  /** Leased by: this node. */
  nodeId: string;
  leaseMs: number;
  /** The queue's global limit, or null. */
  global: number | null;
  /** How many of the rows start at once (free slots): charged their attempt now, the rest claimed ahead. */
  startNow: number;
  /** At most this many keyed rows. */
  keyedAtMost: number;
}

/** A claim this node holds: the instance and the token its claim was fenced with. */
export interface Claim {
  id: string;
  token: string;
}

/** One step outcome as `complete` writes it: the columns of its input recordset. */
export interface OutcomeRow {
  id: string;
  token: string;
  /** Not written: orders the batch (see Completer.commit), and its key is locked first. */
  concurrency_key: string | null;
  status: Status;
  /** New current step; null keeps it. */
  step: string | null;
  set_state: boolean;
  state: unknown;
  run_at: string | null;
  delay_ms: number | null;
  priority: number | null;
  attempt_op: "reset" | "keep" | "refund";
  result: unknown;
  error: unknown;
  await_spec: unknown;
  /** Set when parking as joining: children still to finish. */
  children_pending: number | null;
  /** The next step runs as a join (ctx.children is loaded for it). */
  joined: boolean | null;
  from_step: string;
  to_step: string | null;
  outcome: string;
  attempt: number;
  duration_ms: number;
  hist_error: unknown;
  /** Set when routing to the onFailure step: what failed (ctx.failure). */
  failure?: { error: unknown; step: string; attempts: number };
  /** Postponed by this rate limit, waiting in its line. */
  rate_limited?: string;
}

/** The outcome's flags, false unless sent (a state or result of `false` is data, and is sent). */
const FLAGS = new Set(["set_state", "joined"]);

/**
 * An outcome as the group commit's JSON carries it: without the fields whose missing key
 * complete_outcomes reads the same way (a missing key reads as SQL NULL, as a JSON null does):
 *   - nulls;
 *   - `set_state: false` (the state is kept), `joined: false` and `attempt_op: "keep"`, the
 *     statement's defaults;
 *   - for a done, the transition's `from_step` and `attempt`: only a history row reads them, and a
 *     done writes none (its transition stays in the instance row).
 * A plain done sends 76 bytes (148 without these defaults, 358 with every field), for Postgres to
 * parse and Node to write. Only the outcome's own fields: nulls inside a state or result are the
 * step's data.
 */
function sentFields(outcome: OutcomeRow): Partial<OutcomeRow> {
  const fields: Record<string, unknown> = {};
  const done = outcome.outcome === "done";
  // for…in, not Object.entries: that built an array of [key, value] pairs per outcome, about 7% of
  // the bytes a worker allocated per no-op job. An outcome is a plain object: nothing inherited.
  for (const key in outcome) {
    const value = outcome[key as keyof OutcomeRow];
    if (
      value === null ||
      value === undefined ||
      (value === false && FLAGS.has(key)) ||
      (value === "keep" && key === "attempt_op")
    )
      continue;
    if (done && (key === "from_step" || key === "attempt")) continue;
    fields[key] = value;
  }
  return fields;
}

/**
 * The fence's status check (the row is still running), for statements that find their rows by id
 * (`alias`: the instances table's, when the statement names it). Written so that the partial index
 * instances_lease (where status = 'running') cannot serve it: with the plain comparison, a plan
 * made from statistics that saw few running rows (a queue analysed while deep, or while nothing
 * ran) walks that index instead of the primary key, and reads every running row of every node once
 * per call: 5,003 rows for a commit of three claims, with 5,000 other rows running.
 */
export const stillRunning = (alias?: string) => `${alias ? `${alias}.` : ""}status || '' = 'running'`;

/** The claims' ids and tokens as the two parallel arrays the statements unnest. */
const claimArrays = (claims: readonly Claim[]) => [claims.map((c) => c.id), claims.map((c) => c.token)];

/**
 * How often the reaper gives back a row claimed ahead uncharged before it charges it (see reap):
 * twice, since its last committed outcome.
 */
export const MAX_UNCHARGED_RETURNS = 2;

/**
 * Claims, renewals, releases and reaps commit asynchronously (synchronous_commit
 * off for that transaction only): if the database crashes and loses one, the row
 * simply is runnable or expired again, which at-least-once already allows. It
 * saves a WAL flush per claim round trip. Outcome commits stay synchronous: a
 * committed transition is never lost.
 */
const ASYNC_COMMIT = "async_commit as (select set_config('synchronous_commit', 'off', true) as ok)";

/**
 * The group commit: the function complete_outcomes (migration 32) writes a batch of outcomes in
 * one statement, locking each row once, in id order, as it updates it. With `releaseKeys`, the
 * outcomes that leave their key's slot (every status but runnable, which the trigger's upsert
 * handles, and cancelled, whose key is handed back once its code settles: releaseHold) are taken
 * out of their keys' holders by the function, one update per key, and the row trigger skips them
 * (gen_durable.completing, set until the end of the transaction: hence only for a call that is its
 * transaction). Before, the trigger did it one plpgsql call per row: about 30 us of a keyed
 * outcome's 77. Without it the function never names concurrency_keys.
 */
const completeSql = (s: string, releaseKeys: boolean) =>
  `select id, parent_id from ${s}.complete_outcomes($1::json, ${releaseKeys})`;

export function claimQueries(schema: string) {
  const s = quoteIdent(schema);
  return {
    /**
     * Claims up to `want` ($3) due rows of `queue` ($1) whose machine this node runs ($2), at
     * most `keyedAtMost` ($8) of them keyed; the first `startNow` ($7) start at once (free slots).
     * Walks instances_claim (and, for keyed rows, concurrency_keys) in order and skips rows
     * another node is claiming. $6: the queue's global limit, or null.
     */
    claim: statement<ClaimArgs, ClaimedRow>(
      // The statement is the function claim_rows (migration 26), which plans it once per session.
      // inserted_at as epoch milliseconds: a number, where the driver parsed each row's timestamp
      // text with a regular expression (0.26 us a row against 0.05, about 1% of a no-op job in Node).
      `select id, machine, step, state, attempt, max_attempts, claim_token, correlation_key, awaited, joined,
              parent_id, (extract(epoch from inserted_at) * 1000)::float8 as inserted_ms, queue, error,
              concurrency_key, rate_limited, claimed_ahead, unvalidated, trace_context, version, failure,
              cancel_requested, resumed_by
       from ${s}.claim_rows($1, $2, $3, $4, $5, $6, $7, $8)`,
      (a) => [a.queue, a.machines, a.want, a.nodeId, a.leaseMs, a.global, a.startNow, a.keyedAtMost],
      { prepare: true },
    ),

    /** Serialises the claims of a queue with a global limit, across nodes, for one transaction. */
    lockQueue: statement<{ queue: string }>(
      `select pg_advisory_xact_lock(hashtextextended('gen_durable:queue:' || $1, 0))`,
      (a) => [a.queue],
    ),

    /**
     * Extends the leases of the steps this node is running. Rows locked by a
     * commit in progress are skipped, not waited for (so renewal never queues
     * behind step work); `held = false` marks a claim that is really gone.
     */
    renew: statement<{ claims: readonly Claim[]; leaseMs: number }, { id: string; held: boolean }>(
      `
      with mine as (
        select x.id, x.token from unnest($1::bigint[], $2::bigint[]) as x(id, token)
      ),
      renewable as (
        select i.id from ${s}.instances i join mine x on i.id = x.id
        where i.claim_token = x.token and ${stillRunning("i")}
        for update of i skip locked
      ),
      ${ASYNC_COMMIT},
      renewed as (
        update ${s}.instances i set lease_expires_at = now() + $3 * interval '1 millisecond'
        from renewable r, async_commit where i.id = r.id
        returning i.id
      )
      select id::text as id, true as held from renewed
      union all
      select x.id::text, false from mine x
      where not exists (
        select 1 from ${s}.instances i where i.id = x.id and i.claim_token = x.token and ${stillRunning("i")})`,
      (a) => [...claimArrays(a.claims), a.leaseMs],
      { prepare: true },
    ),

    /**
     * Counts the attempt of rows claimed ahead whose steps have been running for a while (see
     * Leases.markStarted): from here on, a crash charges it. Repeatable: a row already counted
     * is left as it is. Locks in id order and skips rows another statement holds (a commit in
     * progress counts the attempt itself), so it never waits in a lock cycle. Returns every claim:
     * `held = false` for one that is gone, `marked = false` for one skipped (to be tried again).
     */
    start: statement<{ claims: readonly Claim[] }, { id: string; held: boolean; marked: boolean }>(
      `
      with mine as (
        select x.id, x.token from unnest($1::bigint[], $2::bigint[]) as x(id, token)
      ),
      markable as (
        select i.id from ${s}.instances i join mine x on i.id = x.id
        where i.claim_token = x.token and ${stillRunning("i")} and i.claimed_ahead
        order by i.id
        for update of i skip locked
      ),
      ${ASYNC_COMMIT},
      counted as (
        update ${s}.instances i set attempt = i.attempt + 1, claimed_ahead = false
        from markable m, async_commit where i.id = m.id
        returning i.id
      )
      -- One snapshot for the whole statement: claimed_ahead below is as it was before this update.
      select x.id::text as id, i.id is not null as held,
             x.id in (select id from counted) or i.claimed_ahead is false as marked
      from mine x
      left join ${s}.instances i on i.id = x.id and i.claim_token = x.token and ${stillRunning("i")}`,
      (a) => claimArrays(a.claims),
      { prepare: true },
    ),

    /** Gives claimed rows back at once (graceful stop): runnable now, the attempt not counted. */
    release: statement<{ claims: readonly Claim[] }, { queue: string }>(
      `
      with ${ASYNC_COMMIT},
      -- Keys first, in the one global order (see lock_keys), then the rows in id order (as the group commit).
      keys_locked as (
        select ${s}.lock_keys(array(select concurrency_key from ${s}.instances where id = any($1::bigint[]))) as n),
      rows_locked as (
        select i.id from ${s}.instances i join unnest($1::bigint[], $2::bigint[]) as x(id, token) on x.id = i.id
        where i.claim_token = x.token and ${stillRunning("i")} and (select n from keys_locked) >= 0
        order by i.id
        for update of i
      )
      update ${s}.instances i
      set status = 'runnable', run_at = case when i.claimed_ahead then i.run_at else now() end,
          attempt = case when i.claimed_ahead then i.attempt else greatest(i.attempt - 1, 0) end,
          claimed_ahead = false, leased_by = null, lease_expires_at = null, updated_at = now()
      from rows_locked l, async_commit
      -- By id alone, as the group commit's update (see there): rows_locked holds and checked them.
      where i.id = l.id
      returning i.queue`,
      (a) => claimArrays(a.claims),
    ),

    /**
     * Commits a batch of step outcomes in one statement (group commit): one
     * fenced UPDATE and the matching history rows, but for a done, whose
     * transition stays in the instance row (`done_duration_ms`; see
     * `doneTransitions`). Returns the ids that won. The keys of keyed outcomes
     * are left to the row trigger, as for any other update, so it may run alone
     * or inside a transaction that goes on after it (children inserted, a
     * mailbox read). The statement never names concurrency_keys: a batch with
     * no keyed outcome takes no lock on that table.
     */
    complete: statement<{ outcomes: readonly OutcomeRow[] }, { id: string; parent_id: string | null }>(
      completeSql(s, false),
      (a) => [JSON.stringify(a.outcomes.map(sentFields))],
      { prepare: true },
    ),

    /**
     * `complete` for a batch with keyed outcomes: those that give up their key's slot are taken out
     * of their keys' holders here, for the whole batch (see completeSql). A statement of its own
     * transaction only.
     */
    completeReleasingKeys: statement<{ outcomes: readonly OutcomeRow[] }, { id: string; parent_id: string | null }>(
      completeSql(s, true),
      (a) => [JSON.stringify(a.outcomes.map(sentFields))],
      { prepare: true },
    ),

    /**
     * Of the claims ($1 ids, $2 tokens), those whose outcome is committed: asked after a commit was
     * repeated on a fresh connection and won nothing, to tell an earlier commit whose reply was lost
     * (the row carries the claim's token) from a claim that was really lost. By primary key.
     */
    committedBy: statement<{ claims: readonly Claim[] }, { id: string }>(
      `
      select i.id::text as id from ${s}.instances i
      join unnest($1::bigint[], $2::bigint[]) as x(id, token) on i.id = x.id
      where i.committed_token = x.token`,
      (a) => claimArrays(a.claims),
    ),

    /** Takes the transaction's concurrency-key locks in the one global order (see lock_keys). */
    lockKeys: statement<{ keys: readonly string[] }>(`select ${s}.lock_keys($1::text[])`, (a) => [a.keys], {
      prepare: true,
    }),

    /**
     * Hands back the key of a cancelled step whose code has now settled ($2: the
     * instance, $1: its key), and wakes the key's queue (NOTIFY channel $3).
     * Only while that instance still holds it and is no longer running.
     */
    releaseHold: statement<{ key: string; id: string; channel: string }, { queue: string; n: string }>(
      `
      with released as (
        update ${s}.concurrency_keys c set holders = array_remove(c.holders, $2::bigint)
        where c.key = $1 and $2::bigint = any(c.holders)
          and not exists (select 1 from ${s}.instances i where i.id = $2::bigint and ${stillRunning("i")})
        returning c.queue, c.run_at
      )
      select queue, count(pg_notify($3::text, queue)) as n from released
      where queue is not null and run_at is not null group by queue`,
      (a) => [a.key, a.id, a.channel],
    ),

    /** Locks a claimed row for a commit that must read other tables after the lock (await). */
    lockClaimed: statement<{ id: string; token: string }, { id: string }>(
      `select id from ${s}.instances where id = $1 and claim_token = $2 and ${stillRunning()} for update`,
      (a) => [a.id, a.token],
    ),

    /**
     * Makes rows whose lease expired runnable again, at most $1 per call, and
     * records the lost attempt. The attempt stays counted, so a step that keeps
     * killing its worker still runs out of attempts. A row still marked claimed
     * ahead may never have started: it goes back uncharged, in its place,
     * unrecorded, and `ahead_returns` counts it. Its step may also have run
     * without its start being marked yet (Leases.markStarted), so the third such
     * return since the row's last outcome is charged like any other: a step that
     * kills its worker at once still runs out of attempts.
     */
    reap: statement<{ limit: number }, { queue: string; n: number }>(
      `
      with candidates as (
        select id, concurrency_key from ${s}.instances
        where status = 'running' and lease_expires_at < now()
        order by lease_expires_at limit $1
      ),
      -- Their keys first, in the one global order (see lock_keys); then the rows, skipping locked ones.
      keys_locked as (select ${s}.lock_keys(array(select concurrency_key from candidates)) as n),
      expired as (
        select i.id, i.claimed_ahead and i.ahead_returns < ${MAX_UNCHARGED_RETURNS} as unstarted
        from ${s}.instances i join candidates c on c.id = i.id
        where i.status = 'running' and i.lease_expires_at < now() and (select n from keys_locked) >= 0
        for update of i skip locked
      ),
      ${ASYNC_COMMIT},
      reaped as (
        update ${s}.instances i
        set status = 'runnable', run_at = case when e.unstarted then i.run_at else now() end,
            attempt = i.attempt + (i.claimed_ahead and not e.unstarted)::int,
            ahead_returns = i.ahead_returns + e.unstarted::int,
            claimed_ahead = false, leased_by = null, lease_expires_at = null, updated_at = now(),
            error = case when e.unstarted then i.error else jsonb_build_object('name', 'LeaseExpired',
              'message', format('attempt %s of step "%s" lost its worker %s: its lease expired',
                                i.attempt + i.claimed_ahead::int, i.step, coalesce(i.leased_by, ''))) end
        from expired e, async_commit where i.id = e.id
        returning i.id, i.step, i.attempt, i.queue, i.error, e.unstarted
      ),
      history as (
        insert into ${s}.transitions (instance_id, from_step, to_step, outcome, attempt, error)
        select id, step, step, 'lease_expired', attempt, error from reaped where not unstarted
      )
      select queue, count(*)::int as n from reaped group by queue`,
      (a) => [a.limit],
    ),
  };
}

export type ClaimQueries = ReturnType<typeof claimQueries>;
