/**
 * The soak's workload, shared by the orchestrator (main.ts, which inserts and
 * signals) and the worker processes (worker.ts, which run it).
 *
 *   A  SoakOrder: awaits "paid" for up to 5 s, then spawns 5 SoakItem children
 *      and joins them. Its join is transactional and writes soak_orders through
 *      ctx.client (exactly once), with the paid signals its await consumed.
 *   B  SoakCharge: a job keyed over 50 keys that draws from the shared rate limit
 *      (100/s, burst 20) and works 20–80 ms; each run writes its interval by the
 *      database clock to soak_b_runs (at least once: a killed run leaves no end).
 *
 * Children write soak_item_runs (at least once), so re-executed steps are counted.
 */
import type pg from "pg";
import { z } from "zod";
import { defineJob, defineMachine, type GenDurableOptions } from "../../src/index.js";

export const KEYS = 50;
export const CHILDREN = 5;
export const PAID_TIMEOUT = "5s";
export const rateLimits = {
  shared: { limit: 100, period: "1s", burst: 20 },
} as const satisfies GenDurableOptions["rateLimits"];

/** The engine options of every worker (besides pool, schema and nodeId). */
export const workerOptions = {
  queues: { default: 20 },
  leaseDuration: "5s",
  retention: "2m",
  rateLimits,
} as const satisfies Partial<GenDurableOptions>;

let ledger: { pool: pg.Pool; schema: string } | undefined;

/** Worker processes: the pool the steps write their ledger rows with (autocommit, not the engine's). */
export function useLedger(pool: pg.Pool, schema: string): void {
  ledger = { pool, schema };
}

function s(): string {
  if (!ledger) throw new Error("soak ledger not configured in this process");
  return `"${ledger.schema}"`;
}

export function ledgerSql(schema: string): string {
  const q = `"${schema}"`;
  return `
    create table ${q}.soak_orders (order_id bigint primary key, n integer not null, paid_signals bigint[] not null,
      children integer not null, children_done integer not null, inserted_at timestamptz not null, at timestamptz not null default clock_timestamp());
    create table ${q}.soak_b_runs (run bigserial primary key, ckey text not null, instance_id bigint not null, pid integer not null,
      inserted_at timestamptz not null, started_at timestamptz not null default clock_timestamp(), ended_at timestamptz);
    create index on ${q}.soak_b_runs (started_at);
    create table ${q}.soak_item_runs (instance_id bigint not null, pid integer not null, at timestamptz not null default clock_timestamp());`;
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

export const SoakItem = defineJob({
  name: "SoakItem",
  args: z.object({ order: z.number(), index: z.number() }),
  perform: async (args, ctx) => {
    await sleep(2 + Math.random() * 8);
    await ledger!.pool.query(`insert into ${s()}.soak_item_runs (instance_id, pid) values ($1, $2)`, [
      ctx.id,
      process.pid,
    ]);
    return args.index;
  },
});

const OrderState = z.object({ n: z.number(), paid: z.array(z.string()).default([]) });

export const SoakOrder = defineMachine({
  name: "SoakOrder",
  state: OrderState,
  steps: {
    start: (ctx) => ctx.await("paid", "ship", ctx.state, { timeout: PAID_TIMEOUT, onTimeout: "ship" }),
    ship: (ctx) =>
      ctx.spawn(
        Array.from({ length: CHILDREN }, (_, index) => ({ machine: SoakItem, args: { order: ctx.state.n, index } })),
        "join",
        { ...ctx.state, paid: ctx.awaited.map((signal) => signal.id) },
      ),
    join: {
      transactional: true,
      run: async (ctx) => {
        const done = ctx.children.filter((c) => c.status === "done").length;
        await ctx.client.query(
          `insert into ${s()}.soak_orders (order_id, n, paid_signals, children, children_done, inserted_at) values ($1, $2, $3::bigint[], $4, $5, $6)`,
          [ctx.id, ctx.state.n, ctx.state.paid, ctx.children.length, done, ctx.insertedAt],
        );
        return ctx.done({ children: done });
      },
    },
  },
});

export const SoakCharge = defineJob({
  name: "SoakCharge",
  args: z.object({ n: z.number(), key: z.string() }),
  rateLimit: { name: "shared" },
  perform: async (args, ctx) => {
    const { rows } = await ledger!.pool.query<{ run: string }>(
      `insert into ${s()}.soak_b_runs (ckey, instance_id, pid, inserted_at) values ($1, $2, $3, $4) returning run::text`,
      [args.key, ctx.id, process.pid, ctx.insertedAt],
    );
    await sleep(20 + Math.random() * 60);
    await ledger!.pool.query(`update ${s()}.soak_b_runs set ended_at = clock_timestamp() where run = $1`, [
      rows[0]!.run,
    ]);
  },
});

export const machines = [SoakOrder, SoakItem, SoakCharge];
