/**
 * Connection poolers (PgBouncer in transaction or statement mode, and the like) between the
 * engine and Postgres. Such a pooler hands each transaction to whichever server connection is
 * free, so nothing may outlive a transaction on a connection:
 *
 * - Named prepared statements (db/prepared.ts) are prepared on one server connection and used on
 *   another ("prepared statement ... does not exist"): on a pooled connection they are sent
 *   unnamed (parsed every time, as any unprepared query).
 * - LISTEN subscribes a server connection that is then handed to other clients: notifications
 *   are lost. The listener checks its connection and does not LISTEN through a pooler
 *   (db/listener.ts); the engine then polls, or listens on `listenConnectionString`.
 * - Session SETs (the READ COMMITTED default of db/pool.ts) land on one server connection: the
 *   database's or role's default must be READ COMMITTED (Postgres's own default).
 *
 * Advisory locks are all transaction-scoped (pg_advisory_xact_lock), which poolers carry.
 *
 * A pooler is recognised per connection: Postgres tells each client its backend's process id at
 * login (BackendKeyData); a pooler answers the login itself with a process id of its own making,
 * which then differs from what pg_backend_pid() returns through the connection.
 */
import type pg from "pg";
import type { TypedEmitter } from "../events.js";
import type { Logger } from "../logger.js";

const pooled = new WeakSet<pg.ClientBase>();

/** True when `client` goes through a connection pooler (checked by `watchForPooler`, or now). */
export async function isPooled(client: pg.Client | pg.PoolClient): Promise<boolean> {
  if (pooled.has(client)) return true;
  const { rows } = await client.query<{ pid: number }>("select pg_backend_pid() as pid");
  const own = (client as unknown as { processID?: number }).processID;
  const through = own !== undefined && own !== null && Number(rows[0]!.pid) !== own;
  if (through) pooled.add(client);
  return through;
}

type QueryFn = (...args: unknown[]) => unknown;

/**
 * For a client just connected by a pool: checks whether it goes through a pooler (its first
 * query) and, if so, sends the engine's named statements unnamed. Queries issued before the
 * check answered wait for it (pg deprecates queueing a query behind a running one), so none is
 * ever prepared on a pooled connection.
 */
export function watchForPooler(client: pg.PoolClient): void {
  let known = false;
  const check = isPooled(client).then(
    () => void (known = true),
    () => void (known = true), // a broken connection fails the queries after it anyway
  );
  const query = client.query.bind(client) as QueryFn;
  const adapt = (args: unknown[]): unknown[] => {
    const [config] = args;
    const named =
      typeof config === "object" && config !== null && typeof (config as { name?: unknown }).name === "string";
    if (!named || !pooled.has(client)) return args;
    const { text, values } = config as { text: string; values?: unknown[] };
    return [{ text, values }, ...args.slice(1)];
  };
  (client as unknown as { query: QueryFn }).query = (...args: unknown[]) => {
    if (known) return query(...adapt(args));
    // A submittable (a cursor, a COPY stream) is returned to its caller: it cannot wait.
    const [config] = args;
    if (typeof (config as { submit?: unknown } | null)?.submit === "function") return query(...args);
    const callback = args.find((a) => typeof a === "function") as ((e: unknown, r?: unknown) => void) | undefined;
    const later = check.then(() => query(...adapt(args)));
    if (callback) {
      later.catch((error: unknown) => callback(error));
      return undefined;
    }
    return later;
  };
}

/** The listener found its connection pooled: warn once, the node polls from now on. */
export function reportPooledListen(events: TypedEmitter, logger: Logger, pollMs: number): void {
  const message =
    `the LISTEN connection goes through a connection pooler (PgBouncer in transaction mode?), which cannot carry ` +
    `LISTEN: this node finds new work by polling every ${pollMs} ms instead. Pass listenConnectionString ` +
    `(a direct connection) to keep NOTIFY wake-ups`;
  events.emit("engine:warning", { kind: "listen_pooled", message });
  logger.warn({ kind: "listen_pooled" }, message);
}
