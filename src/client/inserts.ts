/** engine.insert and engine.insertMany: validated rows, one statement, correlation-key twins settled. */
import type pg from "pg";
import type { AnyMachine } from "../define.js";
import { describe } from "../duration.js";
import { assertReadCommitted } from "../db/pool.js";
import { KeyExistsError, ValidationError } from "../errors.js";
import type { InsertManyItem, InsertOptions, InsertResult } from "../instance.js";
import { firstOfEachKey, prepareInsert, prepareItems, type InsertRow } from "../runtime/insert.js";
import { plainRows } from "../sql/instances.js";
import { rejectUnknownKeys } from "../suggest.js";
import { beginWrite, type ClientContext } from "./context.js";

/** How many times an insert looks again for twins committed after its snapshot before it gives up. */
const MAX_ROUNDS = 10;

export async function insertOne<M extends AnyMachine>(
  ctx: ClientContext,
  machine: M,
  options: InsertOptions<M> | undefined,
): Promise<InsertResult> {
  // A job without args may be inserted with no options at all.
  const { client, ...rest } = (options ?? {}) as InsertOptions<M> & { client?: pg.ClientBase };
  const row = await prepareInsert(machine, rest, 0, "insert", ctx.config.maxPayloadBytes);
  const [result] = await insertRows(ctx, [row], client);
  return result!;
}

export async function insertMany(
  ctx: ClientContext,
  items: readonly InsertManyItem[],
  options: { client?: pg.ClientBase } = {},
): Promise<InsertResult[]> {
  if (!Array.isArray(items)) throw new ValidationError(`insertMany: items must be an array, got ${describe(items)}`);
  rejectUnknownKeys(options, ["client"], "insertMany", (m) => new ValidationError(m));
  const rows = await prepareItems(
    items,
    (i) => `insertMany[${i}]`,
    (i, item) =>
      new ValidationError(
        `insertMany[${i}]: each item must be { machine, state | args, ...options }, got ${describe(item)}`,
      ),
    ctx.config.maxPayloadBytes,
  );
  return insertRows(ctx, rows, options.client);
}

async function insertRows(
  ctx: ClientContext,
  rows: InsertRow[],
  client: pg.ClientBase | undefined,
): Promise<InsertResult[]> {
  ctx.assertUsable();
  const results: Array<InsertResult | undefined> = new Array(rows.length);
  // A key repeated within the batch refers to the first row that carries it.
  const { unique, firstOf } = firstOfEachKey(rows);
  if (unique.some((row) => row.correlation_key !== null)) {
    const why =
      "an insert with a correlation key takes the signals kept for its key after locking the key, and a " +
      "stricter snapshot misses those committed in between (they would stay in the inbox)";
    if (client) await assertReadCommitted(client, "insert", why);
    else await ctx.checkPool();
  }
  const runner = client ?? ctx.pool;
  // In the caller's transaction the NOTIFY goes out with its commit (see beginWrite otherwise).
  const write = client ? undefined : beginWrite(ctx);
  const channel = write ? write.channel : ctx.config.channel;
  try {
    let pending = unique;
    for (let round = 0; pending.length > 0; round++) {
      if (round === MAX_ROUNDS)
        throw new Error(`insert: could not settle correlation keys after ${MAX_ROUNDS} rounds of concurrent inserts`);
      // Rows without keys (most jobs) take a statement without the keys' locks and lookups.
      const { rows: out } = plainRows(pending)
        ? await ctx.sql.instances.insertPlain(runner, { rows: pending, channel })
        : await ctx.sql.instances.insert(runner, { rows: pending, channel, windowMs: ctx.config.idempotencyWindowMs });
      const rejected = out.find((row) => row.rejected);
      // Nothing was inserted: the statement inserts no row when one is rejected.
      if (rejected) throw new KeyExistsError(rows[rejected.idx]!.correlation_key!, rejected.id);
      for (const row of out) {
        if (row.idx < 0) continue;
        results[row.idx] = { id: row.id, inserted: row.inserted };
        if (row.inserted && row.due) write?.due(row.queue!);
      }
      // Rows whose twin committed after this statement's snapshot: look again.
      pending = pending.filter((row) => results[row.idx] === undefined);
    }
  } finally {
    write?.end();
  }
  for (const row of rows) {
    if (results[row.idx] === undefined) results[row.idx] = { id: results[firstOf(row)]!.id, inserted: false };
  }
  return results as InsertResult[];
}
