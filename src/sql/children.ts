/**
 * Fan-out and join. A child's completion writes only its own row; the join
 * sweep later counts finished children per parent in bulk. So 10,000 children
 * finishing do not queue 10,000 updates on one parent row, and no completion
 * ever locks a row it did not claim (no lock cycles with cancel).
 */
import type { ErrorRecord } from "../json.js";
import { quoteIdent } from "../names.js";
import type { JoinRule } from "../runtime/join-rule.js";
import type { Status } from "../status.js";
import { TERMINAL_SQL } from "../status.js";
import { statement } from "./query.js";

/** A child of the latest spawn, as ctx.children shows it. */
export interface ChildRow {
  id: string;
  machine: string;
  status: Status;
  result: unknown;
  error: ErrorRecord | null;
}

export function childQueries(schema: string) {
  const s = quoteIdent(schema);
  /**
   * Whether counting pp's children into the joining parent p resumes it: every child is terminal,
   * or its join condition (runtime/join-rule.ts) holds. Read from p inside the UPDATE, so from the
   * row version the parent lock guards, never from an older snapshot.
   */
  const wakes = `coalesce(p.status = 'joining' and (
              p.children_pending - pp.n <= 0
              or p.children_done + pp.d >= (p.join_rule->>'need')::int
              or p.children_failed + pp.f > (p.join_rule->>'total')::int - (p.join_rule->>'need')::int
              or (p.join_rule ? 'failFast' and p.children_failed + pp.f > 0)), false)`;
  return {
    /**
     * Counts up to $1 (`limit`) finished, uncounted children, each exactly once (row
     * lock + join_counted), and subtracts them from their parents. Parents are
     * locked first and never waited for (skip locked): one held by a cancel, a
     * retry or another sweeper is simply counted on a later tick, so the sweep
     * can never deadlock. Parents are taken oldest first, and the limit counts
     * only the parents locked here, so no number of locked ones crowds out the
     * rest; finished children whose parent was pruned are set aside (counted,
     * with nobody to count them into), so they do not either. A parent whose
     * count reaches zero becomes runnable at its join step: that transition
     * happens once, under the parent's row lock. Returns the number of
     * children counted (set-aside ones included) and the queues of woken parents.
     */
    sweep: statement<{ limit: number }, { counted: number; woken: string[] }>(
      `
      -- Waking a keyed parent changes its key's row: the keys of every parent this sweep may
      -- wake are locked first, in the one global order (see lock_keys), before any row is.
      with keys_locked as (
        select ${s}.lock_keys(array(
          select distinct p.concurrency_key from ${s}.instances p
          where p.concurrency_key is not null
            and p.id in (select parent_id from ${s}.instances
                         where parent_id is not null and not join_counted and status in ${TERMINAL_SQL}))) as n
      ),
      orphans as (
        select c.id from ${s}.instances c
        where c.parent_id is not null and not c.join_counted and c.status in ${TERMINAL_SQL}
          and not exists (select 1 from ${s}.instances p where p.id = c.parent_id)
          and (select n from keys_locked) >= 0
        order by c.id
        limit $1
        for update of c skip locked
      ),
      set_aside as (
        update ${s}.instances c set join_counted = true from orphans o where c.id = o.id returning c.id
      ),
      -- Parents first, and never waiting: a parent locked by a cancel (which then locks its
      -- children) is skipped this round, so the sweep never holds a child while waiting for its parent.
      locked as (
        select p.id, p.status as was from ${s}.instances p
        where p.id in (select parent_id from ${s}.instances
                       where parent_id is not null and not join_counted and status in ${TERMINAL_SQL})
          and (select n from keys_locked) >= 0
        order by p.id
        limit $1
        for update skip locked
      ),
      finished as (
        select id, parent_id, status from ${s}.instances
        where parent_id in (select id from locked) and not join_counted and status in ${TERMINAL_SQL}
        order by id
        limit $1
        for update skip locked
      ),
      counted as (
        update ${s}.instances c set join_counted = true
        from finished f where c.id = f.id
        returning f.parent_id, f.id, f.status
      ),
      -- Per parent: the children of its latest spawn counted now (n), done (d) or not (f). A child of
      -- an earlier spawn (one a join condition let the parent resume without) is counted, not subtracted.
      per_parent as (
        select c.parent_id,
               count(*) filter (where c.id >= coalesce(p.children_from, 0))::int as n,
               count(*) filter (where c.id >= coalesce(p.children_from, 0) and c.status = 'done')::int as d,
               count(*) filter (where c.id >= coalesce(p.children_from, 0) and c.status <> 'done')::int as f
        from counted c join ${s}.instances p on p.id = c.parent_id
        group by c.parent_id
      ),
      parents as (
        update ${s}.instances p
        set children_pending = p.children_pending - pp.n,
            children_done = p.children_done + pp.d,
            children_failed = p.children_failed + pp.f,
            status = case when ${wakes} then 'runnable' else p.status end,
            run_at = case when ${wakes} then now() else p.run_at end,
            joined = p.joined or (${wakes}),
            updated_at = now()
        from per_parent pp, locked l
        where p.id = pp.parent_id and l.id = p.id and p.children_pending is not null
        returning p.id, p.step, p.queue, p.status, p.children_pending
      ),
      -- Woken now: joining before, runnable after. A parent a join condition woke earlier is runnable
      -- already when its later children are counted (its join step has not run yet): not again.
      woke as (
        select pr.id, pr.step, pr.queue from parents pr join locked l on l.id = pr.id
        where pr.status = 'runnable' and l.was = 'joining'
      ),
      history as (
        insert into ${s}.transitions (instance_id, from_step, to_step, outcome)
        select id, step, step, 'joined' from woke
      )
      select (select count(*)::int from finished) + (select count(*)::int from set_aside) as counted,
             array(select distinct queue from woke) as woken`,
      (a) => [a.limit],
      { prepare: true },
    ),

    /** The children of a parent's latest spawn, in spawn order, for ctx.children. */
    children: statement<{ parentId: string }, ChildRow>(
      `
      select c.id::text as id, c.machine, c.status, c.result, c.error
      from ${s}.instances p join ${s}.instances c on c.parent_id = p.id and c.id >= p.children_from
      where p.id = $1 order by c.id`,
      (a) => [a.parentId],
    ),

    /** Live and total children of the latest spawn (explain). */
    progress: statement<{ parentId: string }, { total: number; live: number; join_rule: JoinRule | null }>(
      `
      select count(*)::int as total, count(*) filter (where c.status not in ${TERMINAL_SQL})::int as live,
             (select join_rule from ${s}.instances where id = $1) as join_rule
      from ${s}.instances p join ${s}.instances c on c.parent_id = p.id and c.id >= p.children_from
      where p.id = $1`,
      (a) => [a.parentId],
    ),

    /** Marks where the latest spawn's children start (`first`), with its join condition (null: every child). */
    markSpawn: statement<{ parentId: string; first: string; joinRule: JoinRule | null }>(
      `
      update ${s}.instances set children_from = $2, join_rule = $3::jsonb, children_done = 0, children_failed = 0
      where id = $1`,
      (a) => [a.parentId, a.first, JSON.stringify(a.joinRule)],
    ),

    /**
     * The live children of the parent's latest spawn when its join condition resumed it early and
     * asked for them to be cancelled (the join step's attempt cancels them before it runs).
     */
    remaining: statement<{ parentId: string }, { id: string }>(
      `
      select c.id::text as id
      from ${s}.instances p join ${s}.instances c on c.parent_id = p.id and c.id >= p.children_from
      where p.id = $1 and p.join_rule is not null and not p.join_rule ? 'keep' and p.children_pending > 0
        and c.status not in ${TERMINAL_SQL}
      order by c.id`,
      (a) => [a.parentId],
    ),
  };
}

export type ChildQueries = ReturnType<typeof childQueries>;
