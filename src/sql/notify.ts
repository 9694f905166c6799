import { statement } from "./query.js";

/** Wake-ups to every node: one NOTIFY per queue on the engine's channel. */
export const notifyQueues = statement<{ channel: string; queues: readonly string[] }>(
  "select pg_notify($1, q) from unnest($2::text[]) as q",
  (a) => [a.channel, a.queues],
);
