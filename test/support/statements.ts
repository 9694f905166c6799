/** Counting what an engine sends: a pool whose query() records the text of every statement. */
import type pg from "pg";

/** Records the text of every statement sent through `pool.query` until `restore()`. */
export function recordStatements(pool: pg.Pool): { texts: string[]; restore: () => void } {
  const texts: string[] = [];
  const query = pool.query;
  const bound = query.bind(pool) as (...args: unknown[]) => unknown;
  pool.query = ((...args: unknown[]) => {
    const first = args[0];
    texts.push(typeof first === "string" ? first : ((first as { text?: string }).text ?? ""));
    return bound(...args);
  }) as typeof pool.query;
  return { texts, restore: () => void (pool.query = query) };
}
