/** Wake-ups to every node: one NOTIFY per queue on the engine's channel. $1: the channel, $2: the queues. */
export const NOTIFY_QUEUES = "select pg_notify($1, q) from unnest($2::text[]) as q";
