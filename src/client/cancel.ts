/**
 * engine.cancel: the instance and its live descendants end `cancelled`, in one transaction (or
 * inside the caller's), taking their concurrency keys in the one global order first.
 */
import type pg from "pg";
import { assertReadCommitted, withTransaction } from "../db/pool.js";
import { describe } from "../duration.js";
import { InstanceTerminatedError, UnknownInstanceError, ValidationError } from "../errors.js";
import { storableMessage } from "../json.js";
import { checkId } from "../names.js";
import { TERMINAL } from "../status.js";
import { CANCELLED_NOTICE } from "../runtime/cancel-notice.js";
import { onCancelSteps } from "../runtime/routes.js";
import type { Claim } from "../sql/claims.js";
import type { CancelTargetRow } from "../sql/instances.js";
import type { ClientContext } from "./context.js";

/** A try is undone and made again with the keys it met; after this many, keys are taken as they come. */
const MAX_TRIES = 5;

/**
 * What a cancel did: the instances it cancelled (the target first); none when it was already
 * cancelled or is running its onCancel step after an earlier cancel. `claims`: their claims as the
 * cancel found them, whose steps still running are to be aborted (a claim made after the commit,
 * of an onCancel step, has a greater token). `routed`: the target was sent to its onCancel step, and
 * ends cancelled when that step has run.
 */
export interface Cancelled {
  machine: string;
  reason: string;
  ids: string[];
  claims: Claim[];
  routed: boolean;
}

export async function cancelInstance(
  ctx: ClientContext,
  id: string,
  reason: string | undefined,
  options: { client?: pg.ClientBase } = {},
): Promise<Cancelled> {
  ctx.assertUsable();
  const bad = (m: string) => new ValidationError(`cancel: ${m}`);
  checkId(id, "id", bad);
  if (reason !== undefined && typeof reason !== "string") throw bad(`reason must be a string, got ${describe(reason)}`);
  // Stored as a step's error message is: bounded (8 KiB), NUL and lone surrogates replaced.
  const error = { name: "Cancelled", message: reason === undefined ? "cancelled" : storableMessage(reason) };
  const tree = new CancelTree(ctx, id, JSON.stringify(error), onCancelSteps(ctx.config.machines));
  const result = options.client ? await tree.inCallerTransaction(options.client) : await tree.inOwnTransaction();
  const { target, cancelled, claims } = result;
  if (!target) throw new UnknownInstanceError(id);
  const none = { machine: target.machine, reason: error.message, ids: [], claims: [], routed: false };
  if (target.status === "cancelled") return none;
  if (TERMINAL.has(target.status)) throw new InstanceTerminatedError(id, target.status);
  // Already running its onCancel step: that step ends it cancelled.
  if (target.cleaning) return none;
  return { machine: target.machine, reason: error.message, ids: cancelled, claims, routed: target.routed };
}

/** One try of a cancel: `missing` keys (not held, met in a level) make the caller undo it and try again. */
interface CancelTry {
  target: CancelTargetRow | undefined;
  cancelled: string[];
  claims: Claim[];
  missing: string[];
}

class MissingKeys extends Error {
  constructor(readonly keys: string[]) {
    super("cancel: concurrency keys to take first");
  }
}

class CancelTree {
  constructor(
    private readonly ctx: ClientContext,
    private readonly id: string,
    private readonly errorJson: string,
    /** JSON of the machines with an onCancel step, and that step (runtime/routes.ts). */
    private readonly cleanups: string,
  ) {}

  /**
   * The instance first, then its descendants level by level, each level in a statement of its own
   * whose snapshot is taken after the locks of the level above were granted: it sees every child
   * that a spawn holding one of those rows committed (see cancel and cancelDescendants in
   * sql/instances.ts). Keys: each level passes those the first statement took (`held`), or null to
   * take its own as it comes: right when each statement is a transaction of its own (nothing is
   * held between them).
   */
  private async once(client: pg.ClientBase, extraKeys: string[], holdsKeys: boolean): Promise<CancelTry> {
    const { instances } = this.ctx.sql;
    const { channel } = this.ctx.config;
    const common = { error: this.errorJson, cleanups: this.cleanups, channel, notice: CANCELLED_NOTICE };
    const { rows } = await instances.cancel(client, { ...common, id: this.id, extraKeys });
    const cancelled: string[] = [];
    const claims: Claim[] = [];
    const target = rows[0];
    if (!target || TERMINAL.has(target.status)) return { target, cancelled, claims, missing: [] };
    if (target.token !== null) claims.push({ id: this.id, token: target.token });
    const held = holdsKeys ? target.keys : null;
    for (let level = [this.id]; level.length > 0;) {
      cancelled.push(...level);
      const { rows: round } = await instances.cancelDescendants(client, { ...common, parents: level, held });
      const { missing, cancelled: next, tokens } = round[0]!;
      if (missing.length > 0) return { target, cancelled, claims, missing };
      next.forEach((id, i) => claims.push({ id, token: tokens[i]! }));
      level = next;
    }
    return { target, cancelled, claims, missing: [] };
  }

  /**
   * In the caller's transaction a savepoint undoes a try (a child spawned while the cancel ran
   * can bring a key it does not hold); outside a transaction nothing is held between statements.
   */
  async inCallerTransaction(client: pg.ClientBase): Promise<CancelTry> {
    const why =
      "cancel locks the instance and then looks for its children, and a stricter snapshot misses children " +
      "spawned or retried in between";
    await assertReadCommitted(client, "cancel", why);
    const inTransaction = await client.query("savepoint gen_durable_cancel").then(
      () => true,
      (e: unknown) => {
        if ((e as { code?: string }).code === "25P01") return false;
        throw e;
      },
    );
    if (!inTransaction) return this.once(client, [], false);
    const extra: string[] = [];
    for (let tries = 1; ; tries++) {
      const made = await this.once(client, extra, tries < MAX_TRIES).catch(async (e: unknown) => {
        await client.query("rollback to savepoint gen_durable_cancel").catch(() => {});
        throw e;
      });
      if (made.missing.length > 0) {
        await client.query("rollback to savepoint gen_durable_cancel");
        extra.push(...made.missing);
        continue;
      }
      await client.query("release savepoint gen_durable_cancel");
      return made;
    }
  }

  async inOwnTransaction(): Promise<CancelTry> {
    const extra: string[] = [];
    for (let tries = 1; ; tries++) {
      const made = await withTransaction(this.ctx.pool, async (client) => {
        const once = await this.once(client, extra, tries < MAX_TRIES);
        // Throwing rolls the try back.
        if (once.missing.length > 0) throw new MissingKeys(once.missing);
        return once;
      }).catch((e: unknown) => {
        if (e instanceof MissingKeys) return e;
        throw e;
      });
      if (made instanceof MissingKeys) extra.push(...made.keys);
      else return made;
    }
  }
}
