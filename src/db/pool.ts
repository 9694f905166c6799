/** Connections: the engine's pool, transactions, and which errors mean "the connection, not the query". */
import pg from "pg";
import { ConfigError, ValidationError } from "../errors.js";
import { watchForPooler } from "./pooler.js";

export interface ConnectionOptions {
  /** Postgres connection string, e.g. `process.env.DATABASE_URL` (or pass `pool`). */
  connectionString?: string;
  /** Your own pg.Pool (its connections must default to READ COMMITTED); it is not ended by gen-durable. */
  pool?: pg.Pool;
}

/** Returns the caller's pool, or a new one we own (and must end). */
export function openPool(
  options: ConnectionOptions,
  where: string,
  applicationName: string,
  max = 10,
  /** Connections kept open while idle (pg.Pool closes the others after 10 s idle). */
  min = 0,
): { pool: pg.Pool; owned: boolean } {
  if (options.pool && options.connectionString)
    throw new ConfigError(`${where}: pass either connectionString or pool, not both`);
  if (options.pool) {
    if (!(options.pool instanceof pg.Pool) && typeof (options.pool as { query?: unknown }).query !== "function") {
      throw new ConfigError(`${where}: pool must be a pg.Pool`);
    }
    guardClients(options.pool);
    return { pool: options.pool, owned: false };
  }
  if (typeof options.connectionString !== "string" || options.connectionString.length === 0) {
    throw new ConfigError(
      `${where}: connectionString (or pool) is required; e.g. connectionString: process.env.DATABASE_URL`,
    );
  }
  const pool = new pg.Pool({
    connectionString: options.connectionString,
    max,
    min,
    application_name: applicationName,
    onConnect: readCommitted(),
  });
  // An idle client that loses its connection emits 'error' on the pool; without a
  // listener that would crash the process. The next query simply gets a new client.
  pool.on("error", () => {});
  guardClients(pool);
  return { pool, owned: true };
}

/**
 * Opens connections until `pool` holds `n` (with its `min` at least `n`, they then stay open).
 * A statement that finds no idle connection waits for a new one: TCP, authentication and the
 * session's setup, 20-40 ms on a local server, in front of the statement (a lone insert after a
 * quiet spell, or the claim that follows it). Each connection is taken at once and given back.
 */
export async function openIdleConnections(pool: pg.Pool, n: number): Promise<void> {
  if (pool.totalCount >= n) return;
  // Taken together, so that the idle ones go first and the rest are new.
  const clients = await Promise.all(Array.from({ length: n }, () => pool.connect()));
  for (const client of clients) client.release();
}

/**
 * The isolation level every statement of the engine assumes. Its protocols
 * lock a row in one statement and read what it guards in the next (an await's
 * mailbox, a cancelled parent's children, a concurrency key's instances), or
 * read with a fresh snapshot inside a function (take_inbox, the concurrency key
 * trigger): both see what committed before the lock only under READ COMMITTED.
 * Under REPEATABLE READ the later read keeps the transaction's first snapshot
 * and misses it (a signal never consumed, a kept signal left in the inbox), and
 * a row updated after that snapshot fails the statement instead of being
 * re-checked.
 */
export const ISOLATION = "read committed";

/**
 * Sessions of pools the engine opens default to READ COMMITTED, whatever the
 * database's, the role's or the connection string's default: single statements
 * run in an implicit transaction of the session's default level. The SET runs
 * before anything else the new client is asked to run.
 */
function readCommitted(previous?: (client: pg.ClientBase) => unknown): (client: pg.ClientBase) => Promise<void> {
  // pg-pool awaits its onConnect hook before it hands the new client out: the SET never races
  // the client's first query.
  return async (client) => {
    await previous?.(client);
    await client.query(`set default_transaction_isolation = '${ISOLATION}'`);
  };
}

/** The level a new transaction (or, inside one, the current transaction) of `client` runs at. */
export async function isolationOf(client: pg.ClientBase | pg.Pool): Promise<string> {
  const { rows } = await client.query<{ transaction_isolation: string }>("show transaction_isolation");
  return rows[0]!.transaction_isolation;
}

/** True for the levels that behave as READ COMMITTED (Postgres runs READ UNCOMMITTED as READ COMMITTED). */
export function isReadCommitted(level: string): boolean {
  return level === "read committed" || level === "read uncommitted";
}

/** Refuses a caller's `client` in a transaction stricter than READ COMMITTED, saying why `what` needs it. */
export async function assertReadCommitted(client: pg.ClientBase, what: string, why: string): Promise<void> {
  const level = await isolationOf(client);
  if (isReadCommitted(level)) return;
  throw new ValidationError(
    `${what}: the client's transaction is ${level.toUpperCase()}; gen-durable needs READ COMMITTED here: ${why}. ` +
      "Use a READ COMMITTED transaction (Postgres' default), or no client",
  );
}

/**
 * A check that a caller's pool runs READ COMMITTED by default: the engine's single statements
 * run at the session's default, and it locks a row in one statement and reads what the row
 * guards in the next, which a stricter snapshot misses. (A pool the engine opens is set to
 * READ COMMITTED: the check passes at once.) Checked once; a check that failed (the database
 * away, or the pool refused) runs again next time.
 */
export function poolIsolationCheck(pool: pg.Pool, owned: boolean): () => Promise<void> {
  let checked: Promise<void> | undefined;
  return () => {
    if (owned) return Promise.resolve();
    checked ??= isolationOf(pool).then((level) => {
      if (isReadCommitted(level)) return;
      throw new ConfigError(
        `GenDurable: the pool's connections default to ${level.toUpperCase()} (default_transaction_isolation), ` +
          "and gen-durable needs READ COMMITTED: it locks a row in one statement and reads what the row guards " +
          "in the next, which a stricter snapshot misses. Pass a pool whose connections default to read committed " +
          '(the pg.Pool option options: "-c default_transaction_isolation=read\\ committed"), or a connectionString',
      );
    });
    return checked.catch((error: unknown) => {
      checked = undefined;
      throw error;
    });
  };
}

/**
 * A small pool of its own on the server of `pool`, for work that must never
 * queue behind step work: lease renewal and release. Steps may hold every
 * connection of the main pool for as long as they run (a transactional step
 * holds one from start to commit; with poolSize 2 and concurrency 10 the other
 * eight wait for one), and a renewal waiting behind them would let their
 * leases expire although the node is alive and well (test/chaos/faults.test.ts,
 * "a pool smaller than the concurrency"). Its connection stays open (renewals come
 * every third of a lease) and every connect and query has a deadline of
 * `deadlineMs`: a renewal that cannot finish within a lease is too late anyway,
 * and must not hang the loop behind it for good.
 *
 * Returns undefined when `pool` does not say how it connects (a pool-like
 * object without pg.Pool's `options`): the caller then uses `pool` itself.
 */
export function openSidePool(pool: pg.Pool, suffix: string, max: number, deadlineMs: number): pg.Pool | undefined {
  const base = (pool as unknown as { options?: pg.PoolConfig }).options;
  if (!base || typeof base !== "object") return undefined;
  const side = new pg.Pool({
    ...base,
    max,
    min: 0,
    idleTimeoutMillis: 0,
    application_name: `${base.application_name ?? "gen-durable"}-${suffix}`,
    connectionTimeoutMillis: deadlineMs,
    query_timeout: deadlineMs,
    onConnect: readCommitted(base.onConnect),
  });
  side.on("error", () => {});
  guardClients(side);
  return side;
}

const guarded = new WeakSet<pg.Pool>();

/**
 * pg-pool listens for a client's 'error' only while the client is idle. A
 * connection that dies while checked out (a step's transaction, say, when the
 * server restarts) would emit an unhandled 'error' and kill the process. The
 * failure reaches the caller through its pending query anyway, so a listener
 * that ignores it is all that is needed.
 */
export function guardClients(pool: pg.Pool): void {
  if (guarded.has(pool)) return;
  guarded.add(pool);
  pool.on("connect", (client) => {
    client.on("error", () => {});
    // Behind a connection pooler, the engine's named statements go unnamed (see db/pooler.ts).
    watchForPooler(client);
  });
}

export async function withTransaction<T>(pool: pg.Pool, body: (client: pg.PoolClient) => Promise<T>): Promise<T> {
  const client = await pool.connect();
  let broken: unknown;
  try {
    // Explicit: the session's default may be stricter (a caller's pool, a role's setting).
    await client.query(`begin isolation level ${ISOLATION}`);
    const value = await body(client);
    await client.query("commit");
    return value;
  } catch (error) {
    broken = isConnectionError(error) ? error : undefined;
    await client.query("rollback").catch((e: unknown) => (broken = e));
    throw error;
  } finally {
    // A client whose connection failed is destroyed rather than returned to the pool.
    client.release(broken instanceof Error ? broken : undefined);
  }
}

const CONNECTION_SQLSTATES = new Set([
  "57P01",
  "57P02",
  "57P03",
  "08000",
  "08003",
  "08006",
  "08001",
  "08004",
  "25006",
  "53300",
]);

/** A deadlock or serialization failure: the statement was rolled back whole and may simply be repeated. */
export function isTransient(error: unknown): boolean {
  const code = readSafely(() => (error as { code?: unknown } | null)?.code);
  return code === "40P01" || code === "40001";
}

/** A read of an unknown thrown value (a getter or a Proxy trap may throw): undefined if it throws. */
function readSafely<T>(read: () => T): T | undefined {
  try {
    return read();
  } catch {
    return undefined;
  }
}

/** True when an error came from the connection or server state rather than from the statement itself. */
export function isConnectionError(error: unknown): boolean {
  return readSafely(() => isConnectionErrorOf(error)) ?? false;
}

function isConnectionErrorOf(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (typeof code === "string" && (CONNECTION_SQLSTATES.has(code) || code.startsWith("08"))) return true;
  if (typeof code === "string" && ["ECONNRESET", "ECONNREFUSED", "EPIPE", "ETIMEDOUT", "ENOTFOUND"].includes(code))
    return true;
  return /Connection terminated|connection is closed|Client has encountered a connection error|not queryable/i.test(
    error.message,
  );
}
