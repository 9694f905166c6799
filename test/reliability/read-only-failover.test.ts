/**
 * Read-only after a failover: the database the engine writes to turns read-only (as a demoted
 * primary or a standby does) and its connections are terminated; every connection opened after
 * that is read-only, every write fails with SQLSTATE 25006. Later the setting is reverted while
 * the engine's read-only connections are left open: the engine must recycle them by itself.
 * Throughout, a producer keeps inserting (retrying a failed insert with the same correlationKey).
 * Checked: every instance completes exactly as it does without the fault (same result, one set of
 * children, its transactional write once), none is lost, none failed, no insert duplicated.
 *
 * On a database of its own (createDatabase): the setting is per database.
 * RELIABILITY_FULL=1: 2,000 instances and three rounds of the fault (default: 150, one round).
 */
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { GenDurable, defineMachine, migrate, type EngineEvents } from "../../src/index.js";
import { createDatabase, eventually } from "../support/db.js";

const FULL = !!process.env.RELIABILITY_FULL;
const INSTANCES = FULL ? 2000 : 150;
const ROUNDS = FULL ? 3 : 1;
/** How long the database stays read-only once the engine has run into it: longer than the 2 s lease. */
const READ_ONLY_MS = 3000;

const database = await createDatabase("gd_readonly");
const schema = "gd";
await migrate({ connectionString: database.url, schema });
const admin = new pg.Pool({ connectionString: database.url, max: 2, application_name: "readonly-admin" });
admin.on("error", () => {});
await admin.query(`create table gd.effects (instance_id bigint not null)`);

const Child = defineMachine({
  name: "RoChild",
  state: z.object({ n: z.number() }),
  steps: { start: (ctx) => ctx.done(ctx.state.n * 2) },
});
const Flow = defineMachine({
  name: "RoFlow",
  state: z.object({ n: z.number() }),
  steps: {
    start: (ctx) => ctx.next("write", { n: ctx.state.n + 1 }),
    write: {
      transactional: true,
      run: async (ctx) => {
        await ctx.client.query(`insert into gd.effects (instance_id) values ($1)`, [ctx.id]);
        return ctx.next("fan");
      },
    },
    fan: (ctx) =>
      ctx.spawn(
        [
          { machine: Child, state: { n: ctx.state.n } },
          { machine: Child, state: { n: 1 } },
        ],
        "join",
      ),
    join: (ctx) => ctx.done(ctx.children.map((c) => c.result as number).reduce((a, b) => a + b, 0)),
  },
});

const engine = new GenDurable({
  connectionString: database.url,
  schema,
  queues: { default: 10 },
  machines: [Flow, Child],
  leaseDuration: "2s",
  reaperInterval: "300ms",
  pollInterval: "200ms",
});
const errors: Array<EngineEvents["engine:error"]> = [];
engine.on("engine:error", (e) => void errors.push(e));
await engine.start();

afterAll(async () => {
  await engine.stop().catch(() => {});
  await admin.query(`alter database ${database.name} reset default_transaction_read_only`).catch(() => {});
  await admin.end();
  await database.drop();
});

/** Read-only on (or off), and every other connection to the database terminated. */
async function readOnly(on: boolean, terminate: boolean): Promise<void> {
  await admin.query(
    on
      ? `alter database ${database.name} set default_transaction_read_only = on`
      : `alter database ${database.name} reset default_transaction_read_only`,
  );
  if (terminate) {
    await admin.query(
      `select pg_terminate_backend(pid) from pg_stat_activity
       where datname = $1 and pid <> pg_backend_pid() and application_name <> 'readonly-admin'`,
      [database.name],
    );
  }
}

describe("read-only after a failover", () => {
  it(
    "retries, recycles its connections and completes every instance as without the fault",
    async () => {
      const ids = new Map<number, string>();
      let insertErrors = 0;
      const produce = (async () => {
        for (let i = 0; i < INSTANCES; i++) {
          for (;;) {
            try {
              const { id } = await engine.insert(Flow, { state: { n: i }, correlationKey: `ro-${i}` });
              ids.set(i, id);
              break;
            } catch {
              insertErrors++;
              await new Promise((resolve) => setTimeout(resolve, 50));
            }
          }
        }
      })();

      const started = performance.now();
      const recoveries: number[] = [];
      for (let round = 0; round < ROUNDS; round++) {
        const before = await doneCount();
        await eventually("some progress before the fault", async () => (await doneCount()) >= before + 10, 30_000);
        const readOnlyBefore = readOnlyErrors();
        await readOnly(true, true);
        // The engine has run into the read-only database (a write refused with 25006) before it is reverted.
        await eventually(
          "the engine to hit the read-only database",
          () => readOnlyErrors() >= readOnlyBefore + 3,
          30_000,
        );
        // The fault lasts longer than a lease: leases lapse while nothing can be written.
        await new Promise((resolve) => setTimeout(resolve, READ_ONLY_MS));
        const reverted = performance.now();
        await readOnly(false, false);
        const atRevert = await doneCount();
        await eventually("progress after the revert", async () => (await doneCount()) > atRevert, 30_000);
        recoveries.push(Math.round(performance.now() - reverted));
      }
      await produce;

      await eventually(
        "every instance to finish",
        async () =>
          (
            await admin.query(
              `select count(*)::int as n from gd.instances where parent_id is null and status in ('done','failed','cancelled')`,
            )
          ).rows[0].n === INSTANCES,
        120_000,
      );
      const { rows } = await admin.query<{
        key: string;
        status: string;
        result: number;
        effects: number;
        children: number;
      }>(`
      select i.correlation_key as key, i.status, i.result::int as result,
        (select count(*)::int from gd.effects e where e.instance_id = i.id) as effects,
        (select count(*)::int from gd.instances c where c.parent_id = i.id) as children
      from gd.instances i where i.parent_id is null order by i.id`);
      expect(rows.length).toBe(INSTANCES);
      const wrong = rows.filter((r) => {
        const n = Number(r.key.slice(3));
        return r.status !== "done" || r.result !== (n + 1) * 2 + 2 || r.effects !== 1 || r.children !== 2;
      });
      expect(wrong).toEqual([]);
      const { rows: history } = await admin.query<{ outcome: string; n: number }>(
        `select outcome, count(*)::int as n from gd.transitions group by outcome order by outcome`,
      );
      const codes = new Map<string, number>();
      for (const e of errors) {
        const code = String((e.error as { code?: string })?.code ?? "none");
        codes.set(code, (codes.get(code) ?? 0) + 1);
      }
      console.log(
        `read-only failover: ${INSTANCES} instances, ${ROUNDS} round(s) of read-only + terminate, ` +
          `reverted ${READ_ONLY_MS} ms after the engine first hit it (lease 2 s)\n` +
          `  all done as without the fault in ${Math.round(performance.now() - started)} ms; ` +
          `progress again ${recoveries.join(", ")} ms after the revert\n` +
          `  insert errors retried: ${insertErrors}; engine errors by SQLSTATE: ${JSON.stringify(Object.fromEntries(codes))}\n` +
          `  transitions by outcome: ${history.map((h) => `${h.outcome} ${h.n}`).join(", ")}`,
      );
    },
    FULL ? 600_000 : 60_000,
  );
});

function readOnlyErrors(): number {
  return errors.filter((e) => (e.error as { code?: string })?.code === "25006").length;
}

async function doneCount(): Promise<number> {
  const { rows } = await admin.query(
    `select count(*)::int as n from gd.instances where parent_id is null and status = 'done'`,
  );
  return rows[0].n;
}
