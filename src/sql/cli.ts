/**
 * The statements only the command line runs: what `show` lists beside the instance (its signals
 * and children), and the selection of bulk `retry` and `cancel`. Read-only; the validated schema
 * is the only identifier in the text.
 */
import { quoteIdent } from "../names.js";
import type { ErrorRecord } from "../json.js";
import type { Status } from "../status.js";
import { machineRows, type MachineRows } from "./by-machine.js";
import { statement } from "./query.js";

/** A signal of one instance, as `show` lists it. */
export interface ShownSignalRow {
  id: string;
  event: string;
  payload: unknown;
  insertedAt: Date;
  /** null: still waiting in the mailbox. */
  consumedAt: Date | null;
}

/** A child of one instance, as `show` lists it. */
export interface ShownChildRow {
  id: string;
  machine: string;
  status: Status;
  step: string;
  result: unknown;
  error: ErrorRecord | null;
}

/** What bulk `retry` and `cancel` apply to: instances in these statuses, each other field null for "any". */
export interface Selection {
  statuses: readonly Status[];
  machine: string | null;
  queue: string | null;
  /** Last updated longer ago than this, on the database clock. */
  olderThanMs: number | null;
}

export function cliQueries(schema: string) {
  const s = quoteIdent(schema);
  /** The selection as $1 to $4, over the branches of by-machine.ts (`$2`, the machine, may be null for any). */
  const selected = (where: string, order?: MachineRows["order"]) =>
    machineRows(s, {
      machine: "$2",
      anyWhenNull: true,
      statuses: "$1::text[]",
      columns: "id",
      where: `status = any($1::text[]) and ($3::text is null or queue = $3)
        and ($4::double precision is null or updated_at <= now() - $4 * interval '1 millisecond') and ${where}`,
      ...(order ? { order } : {}),
    });
  const selection = (f: Selection) => [f.statuses, f.machine, f.queue, f.olderThanMs];
  return {
    /** An instance's signals, oldest first. */
    signals: statement<{ id: string; limit: number }, ShownSignalRow>(
      `select id::text as id, event, payload, inserted_at as "insertedAt", consumed_at as "consumedAt"
     from ${s}.signals where instance_id = $1 order by id limit $2`,
      (a) => [a.id, a.limit],
    ),

    /** An instance's children, oldest first. */
    children: statement<{ id: string; limit: number }, ShownChildRow>(
      `select id::text as id, machine, status, step, result, error
     from ${s}.instances where parent_id = $1 order by id limit $2`,
      (a) => [a.id, a.limit],
    ),

    /** How many instances the selection holds (`--dry-run`). */
    count: statement<{ selection: Selection }, { n: number }>(
      `select count(*)::int as n from (${selected("true")}) i`,
      (a) => selection(a.selection),
    ),

    /**
     * Ids the selection holds after id `after`, in id order (the bigint's: ordered by the text
     * alias, 10000 came before 9999 and a batch's last id skipped smaller ones), at most `limit`:
     * bulk actions walk them in batches.
     */
    ids: statement<{ selection: Selection; after: string; limit: number }, { id: string }>(
      `select i.id::text as id from (${selected("id > $5::bigint", { by: "id", limit: "$6" })}) i
      order by i.id limit $6`,
      (a) => [...selection(a.selection), a.after, a.limit],
    ),
  };
}

export type CliQueries = ReturnType<typeof cliQueries>;
