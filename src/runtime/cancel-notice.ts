/**
 * How a cancel reaches the steps it stops on every node. Its commit sends NOTIFY on the engine's
 * channel with a payload no queue name can have (queue names exclude control characters, as for
 * published values): this prefix, then the claims it took away as "id:token" pairs separated by
 * spaces. Each node's listener aborts the steps of those claims it runs (Leases.abort); a newer
 * claim of the same instance (its onCancel step) has a greater token and runs on.
 *
 * Sent with the commit, so a cancel made in a caller's transaction that rolls back aborts
 * nothing. A node that misses the notification (its listener reconnecting) learns it at its next
 * lease renewal, which finds the claim gone.
 */
import type { Claim } from "../sql/claims.js";

export const CANCELLED_NOTICE = "\u0001cancelled:";

/** The claims a cancel's notification names, or null when the payload is not one. */
export function cancelledClaims(payload: string): Claim[] | null {
  if (!payload.startsWith(CANCELLED_NOTICE)) return null;
  const claims: Claim[] = [];
  for (const pair of payload.slice(CANCELLED_NOTICE.length).split(" ")) {
    const [id, token] = pair.split(":");
    if (id && token) claims.push({ id, token });
  }
  return claims;
}
