/** engine.check and engine.move: the operator's side of machines that change while instances run. */
import { withTransaction } from "../db/pool.js";
import { ValidationError } from "../errors.js";
import { checkId } from "../names.js";
import {
  findStranded,
  findStrandedAtStart,
  moveInstance,
  type CheckReport,
  type MoveOptions,
  type StrandedInstance,
} from "../runtime/versions.js";
import type { ClientContext } from "./context.js";

/** Live instances of the engine's machines parked at steps the definitions no longer have. */
export async function checkDefinitions(ctx: ClientContext): Promise<CheckReport> {
  ctx.assertUsable();
  const stranded = await findStranded(ctx.pool, ctx.sql.versions, ctx.config.machines);
  return { ok: stranded.length === 0, stranded };
}

/** What a node's start reports: the stranded instances of machines whose definition is new to the check. */
export function strandedAtStart(ctx: ClientContext): Promise<StrandedInstance[]> {
  return findStrandedAtStart(ctx.pool, ctx.sql.versions, ctx.config.machines);
}

/** Moves an instance that is not running to `options.step` (with `options.state`), recorded as "moved". */
export async function moveTo(ctx: ClientContext, id: string, options: MoveOptions): Promise<void> {
  ctx.assertUsable();
  checkId(id, "move: id", (m) => new ValidationError(m));
  const { machines, channel, maxPayloadBytes } = ctx.config;
  await withTransaction(ctx.pool, (client) =>
    moveInstance(client, ctx.sql.versions, machines, id, options, channel, maxPayloadBytes),
  );
}
