/**
 * Where rows are in the claim-ahead buffer's life, read from the database: waits with deadlines
 * (eventually), for tests that hold a node's slots and watch what it does with the rows behind them.
 */
import { eventually, type TestDatabase } from "./db.js";

async function count(db: TestDatabase, ids: readonly string[], where: string): Promise<number> {
  const { rows } = await db.pool.query<{ n: number }>(
    `select count(*)::int as n from "${db.schema}".instances where id = any($1) and ${where}`,
    [ids],
  );
  return rows[0]!.n;
}

/** Until `n` of `ids` are claimed ahead (uncharged, in its buffer) by node `nodeId`. */
export function claimedAhead(db: TestDatabase, ids: readonly string[], nodeId: string, n: number): Promise<true> {
  return eventually(`${n} claimed ahead by ${nodeId}`, async () => {
    return (await count(db, ids, `claimed_ahead and leased_by = '${nodeId}'`)) === n;
  });
}

/** Until `n` of `ids` are runnable, uncharged and leased by nobody (given back, or never claimed). */
export function givenBack(db: TestDatabase, ids: readonly string[], n: number, timeoutMs?: number): Promise<true> {
  return eventually(
    "given back",
    async () => (await count(db, ids, "status = 'runnable' and attempt = 0 and leased_by is null")) === n,
    timeoutMs,
  );
}
