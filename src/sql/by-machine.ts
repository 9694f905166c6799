/**
 * Reading one machine's instances through indexes, whatever the size of the table.
 *
 * instances_machine (machine, id) holds only the rows that stay put: awaiting, joining and
 * finished ones (migration 31). Runnable and running rows pass through on every job, and a row
 * changing status is written anew into every index whose predicate it meets, so keeping them in
 * it cost each job two more index entries. A machine's rows in flight are read through their
 * status's own index instead and filtered by machine: they are the work queued and running,
 * never the bulk of the table.
 *
 * So a query filtered by machine is a UNION ALL of branches, each with a predicate one index
 * serves:
 *   awaiting, joining, finished          instances_machine, walked in id order
 *   runnable without a concurrency key   instances_claim
 *   runnable with one                    instances_key_runnable
 *   running                              instances_lease
 */

import { STATUSES, type Status } from "../status.js";

/** The statuses instances_machine leaves out: they change on every job. */
const IN_FLIGHT_STATUSES: readonly Status[] = ["runnable", "running"];
const quoted = (statuses: readonly Status[]) => statuses.map((status) => `'${status}'`).join(", ");

/** The statuses instances_machine leaves out, as a SQL list (its predicate's). */
export const IN_FLIGHT_SQL = `(${quoted(IN_FLIGHT_STATUSES)})`;

/** The statuses instances_machine holds, as a SQL array. */
const SETTLED_ARRAY = `array[${quoted(STATUSES.filter((status) => !IN_FLIGHT_STATUSES.includes(status)))}]`;

/** Runnable rows without a concurrency key: instances_claim's predicate. */
export const RUNNABLE_UNKEYED = "status = 'runnable' and concurrency_key is null";
/** Runnable rows with one: instances_key_runnable's predicate. */
export const RUNNABLE_KEYED = "status = 'runnable' and concurrency_key is not null";

/** The rows in flight, by the index that holds them: its predicate, and the status it is. */
const IN_FLIGHT = [
  { status: "runnable", predicate: RUNNABLE_UNKEYED }, // instances_claim
  { status: "runnable", predicate: RUNNABLE_KEYED }, // instances_key_runnable
  { status: "running", predicate: "status = 'running'" }, // instances_lease
] as const;

/**
 * Every live row, by the index that holds it: the in-flight branches, awaiting
 * (instances_await_deadline or instances_machine) and joining (instances_joining or
 * instances_machine).
 */
export const LIVE_BRANCHES: readonly string[] = [
  ...IN_FLIGHT.map((b) => b.predicate),
  "status = 'awaiting'",
  "status = 'joining'",
];

export interface MachineRows {
  /** The SQL of the machine (a parameter such as `$1`, of type text). */
  machine: string;
  /**
   * When the machine parameter may be null for "every machine": a further branch reads the whole
   * table in `order` (the primary key) when it is, and every other branch reads nothing.
   */
  anyWhenNull?: boolean;
  /**
   * The SQL of a status filter (a text[] parameter, null for "any"): a branch whose statuses it
   * leaves out is cut before it reads anything.
   */
  statuses?: string;
  /** What each branch selects. */
  columns: string;
  /** The rest of the filter, over the columns of instances; `true` for none. */
  where: string;
  /**
   * `id desc` or `id`, with `limit`: the branches over an index in id order (instances_machine,
   * and the primary key for every machine) stop at the first `limit` rows in that order. The
   * in-flight branches return all their rows (the work in flight): the caller orders and limits
   * the union.
   */
  order?: { by: "id desc" | "id"; limit: string };
}

/** The rows of instances matching `o`, as a UNION ALL usable as a FROM item (see the module comment). */
export function machineRows(s: string, o: MachineRows): string {
  const tail = o.order ? ` order by ${o.order.by} limit ${o.order.limit}` : "";
  const select = (predicate: string) => `select ${o.columns} from ${s}.instances where ${predicate} and (${o.where})`;
  // The checks on parameters alone are one-time filters: a branch they rule out reads nothing,
  // in a plan made for the values as in a generic one. (The planner does not see that a status
  // filter contradicts a branch's own predicate: it would walk the branch's index to the end.)
  const wanted = (statuses: string) => (o.statuses === undefined ? "" : ` and (${o.statuses} is null or ${statuses})`);
  const inFlight = ({ status, predicate }: (typeof IN_FLIGHT)[number]) =>
    select(
      `${o.machine}::text is not null and machine = ${o.machine} and ${predicate}` +
        wanted(`'${status}' = any(${o.statuses})`),
    );
  return [
    ...(o.anyWhenNull ? [`(${select(`${o.machine}::text is null`)}${tail})`] : []),
    `(${select(
      `machine = ${o.machine} and status not in ${IN_FLIGHT_SQL}` + wanted(`${o.statuses} && ${SETTLED_ARRAY}`),
    )}${tail})`,
    ...IN_FLIGHT.map(inFlight),
  ].join("\n      union all\n      ");
}
