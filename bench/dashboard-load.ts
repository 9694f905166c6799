/**
 * What the dashboard costs the database with live tabs open.
 *
 *   npm run build && DATABASE_URL=postgres://... node --import tsx bench/dashboard-load.ts [--seconds 30] [--instances 100000]
 *
 * Creates a database of its own on that server (so pg_stat_database counts only
 * this run), migrates it, loads --instances instances (90% done, the rest failed,
 * awaiting, runnable, scheduled or running; three transitions each over the last
 * 24 hours, so the last hour holds about 1/24 of them), then serves the
 * dashboard with its default settings and opens 10 live clients (each loads its
 * page, then keeps the page's event stream open, as a browser tab does) for
 * --seconds, in two scenarios:
 *
 *   same page    10 tabs on the overview
 *   10 pages     overview, machines, three instance lists, three instance pages, two machine pages
 *
 * Reported per scenario: statements the dashboard sent per second (counted on
 * its pool's connections), transactions per second on the database
 * (pg_stat_database xact_commit + xact_rollback deltas, which include the
 * counting queries of this script: two per scenario), and the mean time of a
 * statement. The database is dropped at the end.
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { randomBytes } from "node:crypto";
import { parseArgs } from "node:util";
import pg from "pg";
import { createDashboard, migrate } from "./engine.js";
import { round, sleep } from "./util.js";

const { values } = parseArgs({
  options: { seconds: { type: "string", default: "30" }, instances: { type: "string", default: "100000" } },
});
const SECONDS = Number(values.seconds);
const INSTANCES = Number(values.instances);
const server = process.env.DATABASE_URL;
if (!server) {
  console.error("bench/dashboard-load.ts: set DATABASE_URL to a Postgres server where this role may create a database");
  process.exit(2);
}

const name = `gd_dashboard_bench_${randomBytes(3).toString("hex")}`;
const admin = new pg.Client({ connectionString: server });
await admin.connect();
await admin.query(`create database ${name}`);
const url = new URL(server);
url.pathname = `/${name}`;
const connectionString = url.toString();
const schema = "gen_durable";

try {
  await migrate({ connectionString, schema });
  const setup = new pg.Pool({ connectionString, max: 2 });
  const started = Date.now();
  await load(setup);
  console.log(
    `loaded ${INSTANCES} instances and ${INSTANCES * 3} transitions in ${round((Date.now() - started) / 1000, 1)} s`,
  );
  const ids = (
    await setup.query<{ id: string }>(
      `select id::text as id from ${schema}.instances where status in ('failed', 'awaiting', 'running') order by id limit 3`,
    )
  ).rows.map((r) => r.id);
  await setup.end();

  // The dashboard's pool, with every statement counted and timed on its connections.
  let statements = 0;
  let statementMs = 0;
  const pool = new pg.Pool({ connectionString, max: 4 });
  // The database is dropped with (force) at the end: a connection closed under the pool is not an error here.
  pool.on("error", () => {});
  pool.on("connect", (client) => {
    const original = client.query.bind(client) as (...args: unknown[]) => unknown;
    (client as unknown as { query: (...args: unknown[]) => unknown }).query = (...args: unknown[]) => {
      statements++;
      const t0 = performance.now();
      const result = original(...args);
      if (result && typeof (result as Promise<unknown>).then === "function")
        void (result as Promise<unknown>).then(
          () => (statementMs += performance.now() - t0),
          () => (statementMs += performance.now() - t0),
        );
      return result;
    };
  });
  const dashboard = createDashboard({ pool, schema });
  const http = createServer(dashboard);
  await new Promise<void>((resolve) => http.listen(0, "127.0.0.1", resolve));
  const base = `http://127.0.0.1:${(http.address() as AddressInfo).port}`;

  const scenarios: Record<string, string[]> = {
    "same page (10 × overview)": Array.from({ length: 10 }, () => "/"),
    "10 different pages": [
      "/",
      "/machines",
      "/instances",
      "/instances?status=failed",
      "/instances?machine=Order&status=runnable",
      ...ids.map((id) => `/instances/${id}`),
      "/machines/Order",
      "/machines/Approval?window=1h",
    ],
  };
  const results: Array<Record<string, string | number>> = [];
  for (const [scenario, pages] of Object.entries(scenarios)) {
    const controllers = pages.map(() => new AbortController());
    // Each tab: the page, then its live stream (read and discarded).
    await Promise.all(
      pages.map(async (page, i) => {
        await (await fetch(`${base}${page}`)).text();
        const res = await fetch(`${base}/live?page=${encodeURIComponent(page)}`, { signal: controllers[i]!.signal });
        void (async () => {
          try {
            for await (const _chunk of res.body!);
          } catch {
            // aborted at the end of the scenario
          }
        })();
      }),
    );
    await sleep(3000); // the first ticks and caches settle
    const xacts = async () =>
      Number(
        (
          await admin.query<{ n: string }>(
            "select xact_commit + xact_rollback as n from pg_stat_database where datname = $1",
            [name],
          )
        ).rows[0]!.n,
      );
    await sleep(1200); // pg_stat_database is flushed about once a second
    const x0 = await xacts();
    const s0 = statements;
    const ms0 = statementMs;
    await sleep(SECONDS * 1000);
    const s1 = statements;
    const ms1 = statementMs;
    await sleep(1200);
    const x1 = await xacts();
    for (const c of controllers) c.abort();
    const row = {
      scenario,
      "statements/s": round((s1 - s0) / SECONDS, 1),
      "transactions/s": round((x1 - x0) / SECONDS, 1),
      "mean statement ms": round((ms1 - ms0) / Math.max(1, s1 - s0), 2),
    };
    results.push(row);
    console.log(row);
    await sleep(2500); // streams closed, timers stopped
  }
  console.log(`\n${INSTANCES} instances, 10 live clients, ${SECONDS} s each, live interval 2 s:`);
  console.table(results);
  http.closeAllConnections();
  await new Promise<void>((resolve) => http.close(() => resolve()));
  await dashboard.close();
  await pool.end();
} finally {
  await admin.query(`drop database if exists ${name} with (force)`);
  await admin.end();
}

/** The instances, their transitions, a few signals, nodes and buckets, by set-based inserts. */
async function load(pool: pg.Pool): Promise<void> {
  const s = schema;
  await pool.query(
    `insert into ${s}.instances (machine, step, state, status, queue, run_at, attempt, leased_by, lease_expires_at,
       correlation_key, result, error, inserted_at, updated_at)
     select m.machine,
            case when st.status = 'done' then 'ship' when st.status = 'awaiting' then 'approved' else 'charge' end,
            jsonb_build_object('sku', 'SKU-' || g, 'amount', g % 1000),
            st.status, m.queue,
            case when st.status = 'runnable' and g % 2 = 0 then now() + interval '1 hour'
                 when st.status = 'awaiting' then now() + interval '1 day' else at end,
            case when st.status in ('failed', 'running') then 1 else 0 end,
            case when st.status = 'running' then 'bench-node' end,
            case when st.status = 'running' then now() + interval '1 hour' end,
            'order-' || g,
            case when st.status = 'done' then '{"ok":true}'::jsonb end,
            case when st.status = 'failed' then '{"name":"Error","message":"card declined"}'::jsonb end,
            at, at + interval '3 seconds'
     from generate_series(1, $1::int) g
     cross join lateral (select now() - (g % 86400) * interval '1 second' as at) t
     cross join lateral (select case when g % 20 < 16 then 'Order' when g % 20 < 19 then 'Approval' else 'Batch' end as machine,
                                case when g % 20 < 16 then 'orders' when g % 20 < 19 then 'approvals' else 'batch' end as queue) m
     cross join lateral (select case g % 100 when 0 then 'failed' when 1 then 'failed' when 2 then 'awaiting'
                                  when 3 then 'awaiting' when 4 then 'awaiting' when 5 then 'runnable' when 6 then 'runnable'
                                  when 7 then 'runnable' when 8 then 'running' else 'done' end as status) st`,
    [INSTANCES],
  );
  await pool.query(
    `insert into ${s}.transitions (instance_id, at, from_step, to_step, outcome, attempt, duration_ms, error)
     select i.id, i.inserted_at + k * interval '1 second', x.from_step, x.to_step, x.outcome, 1, 5 + (i.id % 50)::int,
            case when x.outcome = 'failed' then i.error end
     from ${s}.instances i
     cross join lateral (values (0, 'start', 'charge', 'next'),
                                (1, 'charge', case when i.status = 'failed' then null else 'ship' end,
                                    case when i.status = 'failed' then 'failed' else 'next' end),
                                (2, 'ship', null, 'done')) x(k, from_step, to_step, outcome)
     where x.k < 2 or i.status = 'done'`,
  );
  await pool.query(
    `insert into ${s}.signals (instance_id, event, payload, inserted_at, consumed_at)
     select id, 'approve', '{"by":"ops"}', inserted_at, case when status = 'done' then updated_at end
     from ${s}.instances where machine = 'Approval'`,
  );
  await pool.query(
    `insert into ${s}.nodes (id, machines, queues, lease_ms)
     select 'node-' || n, array['Order', 'Approval', 'Batch'], array['orders', 'approvals', 'batch'], 3600000
     from generate_series(1, 3) n`,
  );
  await pool.query(
    `insert into ${s}.rate_limit_buckets (name, partition, tokens, full_at) values ('payments', '', 3, now() + interval '1 minute')`,
  );
  await pool.query(`analyze`);
}
