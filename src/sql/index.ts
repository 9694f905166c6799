/** Every statement of one schema, by aggregate: what the engine, its client API and its loops run. */
import { childQueries } from "./children.js";
import { claimQueries } from "./claims.js";
import { flowQueries } from "./flow.js";
import { instanceQueries } from "./instances.js";
import { publishedQueries } from "./published.js";
import { signalQueries } from "./signals.js";
import { sqlApiQueries } from "./sql-api.js";
import { versionQueries } from "./versions.js";

export function queriesFor(schema: string) {
  return {
    instances: instanceQueries(schema),
    claims: claimQueries(schema),
    signals: signalQueries(schema),
    children: childQueries(schema),
    flow: flowQueries(schema),
    published: publishedQueries(schema),
    versions: versionQueries(schema),
    sqlApi: sqlApiQueries(schema),
  };
}

export type Queries = ReturnType<typeof queriesFor>;
