/**
 * Forcing interleavings: a side connection holds a lock, the test waits until
 * the engine's statement is seen blocked on it (pg_stat_activity), then lets
 * go. No sleeps: every wait is on a condition, with a deadline.
 */
import pg from "pg";
import { onTestFinished } from "vitest";
import { eventually } from "./db.js";

/** A plain connection of its own, closed (its transaction rolled back) when the calling test finishes. */
export async function sideClient(url: string): Promise<pg.Client> {
  const client = new pg.Client({ connectionString: url, application_name: "test-side" });
  client.on("error", () => {});
  await client.connect();
  onTestFinished(() => client.end().catch(() => {}));
  return client;
}

/** Backends running a statement that contains every one of `fragments` and waiting for a lock. */
async function lockWaiters(pool: pg.Pool, fragments: string[]): Promise<number[]> {
  const { rows } = await pool.query<{ pid: number }>(
    `select pid from pg_stat_activity
     where wait_event_type = 'Lock' and pid <> pg_backend_pid()
       and (select bool_and(strpos(query, f) > 0) from unnest($1::text[]) f)`,
    [fragments],
  );
  return rows.map((r) => r.pid);
}

/** Waits until a statement containing every one of `fragments` waits for a lock. */
export async function waitForLockWait(
  pool: pg.Pool,
  what: string,
  fragments: string[],
  timeoutMs = 15_000,
): Promise<void> {
  await eventually(
    `${what} to wait for a lock`,
    async () => (await lockWaiters(pool, fragments)).length > 0,
    timeoutMs,
  );
}

/**
 * Terminates the backends whose statement contains every one of `fragments` and waits for a lock;
 * returns how many. Name the schema among the fragments: other test files' engines on the same
 * server run the same statements.
 */
export async function terminateLockWaiters(pool: pg.Pool, fragments: string[]): Promise<number> {
  const pids = await lockWaiters(pool, fragments);
  await pool.query("select pg_terminate_backend(pid) from unnest($1::int[]) pid", [pids]);
  return pids.length;
}

/** Cancels the statements containing every one of `fragments` that wait for a lock; returns how many. */
export async function cancelLockWaiters(pool: pg.Pool, fragments: string[]): Promise<number> {
  const pids = await lockWaiters(pool, fragments);
  await pool.query("select pg_cancel_backend(pid) from unnest($1::int[]) pid", [pids]);
  return pids.length;
}

/**
 * Waits until `promise` settled or a statement containing `fragments` waits
 * for a lock, whichever comes first (the code before a fix may not block
 * where the fixed code does). Says which.
 */
export async function blockedOrSettled(
  pool: pg.Pool,
  what: string,
  promise: Promise<unknown>,
  fragments: string[],
  timeoutMs = 15_000,
): Promise<"blocked" | "settled"> {
  let settled = false;
  promise.then(
    () => (settled = true),
    () => (settled = true),
  );
  return eventually(
    `${what} to block or settle`,
    async () => (settled ? "settled" : (await lockWaiters(pool, fragments)).length > 0 ? "blocked" : null),
    timeoutMs,
  );
}

/** `promise`'s outcome as a value: { ok, value } or { ok: false, error }. */
export function outcome<T>(promise: Promise<T>): Promise<{ ok: true; value: T } | { ok: false; error: unknown }> {
  return promise.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error }),
  );
}

/** Promises a test resolves by name: a step awaits `gates.wait(name)`, the test calls `gates.open(name)`. */
export class Gates {
  private readonly map = new Map<string, { promise: Promise<void>; open: () => void; reached: boolean }>();

  private entry(name: string) {
    let entry = this.map.get(name);
    if (!entry) {
      let open!: () => void;
      const promise = new Promise<void>((resolve) => (open = resolve));
      entry = { promise, open, reached: false };
      this.map.set(name, entry);
    }
    return entry;
  }

  /** For the step: resolves when the test opens the gate. */
  wait(name: string): Promise<void> {
    const entry = this.entry(name);
    entry.reached = true;
    return entry.promise;
  }

  /** Whether a step is waiting at (or went through) the gate. */
  reached(name: string): boolean {
    return this.map.get(name)?.reached ?? false;
  }

  open(name: string): void {
    this.entry(name).open();
  }
}
