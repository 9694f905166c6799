/**
 * Recipe: a money transfer as a saga. Withdraw from one account, deposit into another; if the
 * deposit fails for good (the account does not exist, or the bank keeps refusing), refund the
 * withdrawal. Every money movement is a posting keyed by (transfer, kind) and written in the
 * step's own transaction (`transactional: true`), so a step that runs twice — a crash after its
 * commit was sent, a retry — moves money once.
 *
 *   node --import tsx examples/money-transfer.ts     (DATABASE_URL: a migrated database)
 */
import { fileURLToPath } from "node:url";
import pg from "pg";
import { z } from "zod";
import { defineMachine, GenDurable, migrate, NonRetryableError } from "../src/index.js";

/** The bank: accounts and postings, in tables of their own beside the engine's. */
export const bankSchemaSql = (schema: string) => `
  create table if not exists "${schema}".accounts (id text primary key, balance numeric not null);
  create table if not exists "${schema}".postings (
    transfer text not null, kind text not null, account text not null, amount numeric not null,
    primary key (transfer, kind))`;

/** The bank's availability, for tests and the demo: while true, deposits fail (and are retried). */
export const bankDown = { deposits: false };

/** Applies a posting once: a second run of the same step finds it and changes nothing. */
async function post(
  client: pg.ClientBase,
  schema: string,
  transfer: string,
  kind: string,
  account: string,
  amount: number,
) {
  const { rowCount } = await client.query(
    `insert into "${schema}".postings values ($1, $2, $3, $4) on conflict do nothing`,
    [transfer, kind, account, amount],
  );
  if (rowCount === 0) return;
  const updated = await client.query(`update "${schema}".accounts set balance = balance + $2 where id = $1`, [
    account,
    amount,
  ]);
  if (updated.rowCount === 0) throw new NonRetryableError(`there is no account ${account}`);
}

export function transferMachine(schema: string) {
  return defineMachine({
    name: "MoneyTransfer",
    state: z.object({ from: z.string(), to: z.string(), amount: z.number().positive() }),
    backoff: { type: "exponential", base: "1s", max: "1m" },
    steps: {
      start: {
        transactional: true,
        run: async (ctx) => {
          await post(ctx.client, schema, ctx.id, "withdraw", ctx.state.from, -ctx.state.amount);
          return ctx.next("deposit");
        },
      },
      deposit: {
        transactional: true,
        maxAttempts: 5,
        onFailure: "refund",
        run: async (ctx) => {
          if (bankDown.deposits) throw new Error("the bank is not answering");
          await post(ctx.client, schema, ctx.id, "deposit", ctx.state.to, ctx.state.amount);
          return ctx.done({ status: "completed" });
        },
      },
      refund: {
        transactional: true,
        run: async (ctx) => {
          await post(ctx.client, schema, ctx.id, "refund", ctx.state.from, ctx.state.amount);
          return ctx.done({ status: "refunded", reason: ctx.failure?.error.message ?? "unknown" });
        },
      },
    },
  });
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const connectionString = process.env.DATABASE_URL;
  await migrate({ connectionString });
  const schema = "gen_durable";
  const MoneyTransfer = transferMachine(schema);
  const engine = new GenDurable({ connectionString, queues: { default: 5 }, machines: [MoneyTransfer] });
  await engine.start();
  const pool = new pg.Pool({ connectionString });
  await pool.query(bankSchemaSql(schema));
  await pool.query(`insert into "${schema}".accounts values ('alice', 100), ('bob', 0) on conflict (id) do nothing`);
  for (const to of ["bob", "nobody"]) {
    // The caller's transfer id as correlation key: a request sent twice starts one transfer.
    const key = `transfer:${Date.now()}:${to}`;
    const { id } = await engine.insert(MoneyTransfer, {
      state: { from: "alice", to, amount: 10 },
      correlationKey: key,
    });
    const end = await engine.wait(id, { timeout: "30s" });
    console.log(`alice -> ${to}:`, end.result);
  }
  await engine.stop();
  await pool.end();
}
