/**
 * gen-durable, used the way docs/jobs.md shows it: a `defineJob` with a zod args
 * schema (so inserts pay for validation, as a real user's would), `migrate()`,
 * a pure-client engine (no queues) as the producer, and a separate engine with
 * `queues: { default: N }` as the worker. Defaults everywhere else
 * (poolSize 10, pollInterval 1s, group commit on, as shipped).
 */
import pg from "pg";
import { z } from "zod";
import { defineJob, defineMachine, GenDurable, migrate } from "../engine.js";
import type { BenchSystem, FanoutHooks, OnStart } from "./types.js";

export function genDurable(url: string, options: { schema?: string; poolSize?: number } = {}): BenchSystem {
  const schema = options.schema ?? "bench_gen_durable";
  // The handler is swapped per worker; the job definition is module-level in real code.
  let onStart: OnStart = () => {};
  const Noop = defineJob({
    name: "Noop",
    args: z.object({ i: z.number() }),
    perform: (args) => {
      onStart(args.i);
      return null;
    },
  });
  // Fan-out: a machine whose first step spawns N no-op jobs and whose join step finishes it.
  let fanHooks: FanoutHooks = { onChild: () => {}, onJoin: () => {} };
  const FanChild = defineJob({
    name: "FanChild",
    args: z.object({ i: z.number() }),
    perform: (args) => {
      fanHooks.onChild(args.i);
      return null;
    },
  });
  const FanOut = defineMachine({
    name: "FanOut",
    state: z.object({ children: z.number() }),
    steps: {
      start: (ctx) =>
        ctx.spawn(
          Array.from({ length: ctx.state.children }, (_, i) => ({ machine: FanChild, args: { i } })),
          "join",
        ),
      join: (ctx) => {
        fanHooks.onJoin();
        return ctx.done({
          children: ctx.children.length,
          done: ctx.children.filter((c) => c.status === "done").length,
        });
      },
    },
  });
  let producer: GenDurable | undefined;
  let admin: pg.Pool | undefined;
  const poolOption = options.poolSize === undefined ? {} : { poolSize: options.poolSize };

  return {
    name: options.poolSize === undefined ? "gen-durable" : `gen-durable (poolSize ${options.poolSize})`,
    schema,
    config: {
      job: "defineJob({ args: z.object({ i: z.number() }), perform: no-op })",
      producer: "new GenDurable({ connectionString, schema }) — a pure client, default poolSize 10",
      worker: `new GenDurable({ connectionString, schema, queues: { default: N }, machines: [Noop]${options.poolSize ? `, poolSize: ${options.poolSize}` : ""} })`,
      bulk: "engine.insertMany(items)",
      single: "engine.insert(Noop, { args: { i } })",
      fanout:
        "defineMachine FanOut { start: ctx.spawn(N × { machine: FanChild, args: { i } }, 'join'), join: ctx.done(...) }, FanChild = defineJob no-op; " +
        "worker new GenDurable({ queues: { default: N }, machines: [FanOut, FanChild] }), parent inserted by the producer",
    },
    fanoutDescription:
      "native: ctx.spawn inserts all children in the parent's commit (one statement); each finished child wakes the join sweep, which counts finished children into the parent and makes it runnable once at 0; the join step loads ctx.children (all N outcomes) before its first line",

    async setup() {
      await migrate({ connectionString: url, schema });
      producer = new GenDurable({ connectionString: url, schema });
      await producer.start();
      admin = new pg.Pool({ connectionString: url, max: 2 });
    },

    async reset() {
      await admin!.query(`truncate ${schema}.instances, ${schema}.transitions, ${schema}.signals`);
    },

    async enqueueBulk(from, count, batchSize) {
      for (let start = from; start < from + count; start += batchSize) {
        const n = Math.min(batchSize, from + count - start);
        await producer!.insertMany(Array.from({ length: n }, (_, k) => ({ machine: Noop, args: { i: start + k } })));
      }
    },

    async enqueueOne(i) {
      await producer!.insert(Noop, { args: { i } });
    },

    async countFinished() {
      const { rows } = await admin!.query<{ n: number }>(
        `select count(*)::int as n from ${schema}.instances where status = 'done'`,
      );
      return rows[0]!.n;
    },

    async startWorker(concurrency, handler) {
      onStart = handler;
      const engine = new GenDurable({
        connectionString: url,
        schema,
        queues: { default: concurrency },
        machines: [Noop],
        ...poolOption,
      });
      await engine.start();
      return {
        enqueue: async (i) => {
          await engine.insert(Noop, { args: { i } });
        },
        stop: () => engine.stop(),
      };
    },

    async startFanoutWorker(concurrency, hooks) {
      fanHooks = hooks;
      const engine = new GenDurable({
        connectionString: url,
        schema,
        queues: { default: concurrency },
        machines: [FanOut, FanChild],
        ...poolOption,
      });
      await engine.start();
      let parentId: string | undefined;
      return {
        insertParent: async (children) => {
          parentId = (await producer!.insert(FanOut, { state: { children } })).id;
        },
        check: async () => {
          const { rows } = await admin!.query<{ done: number; unfinished: number; finished: boolean }>(
            `select (select count(*)::int from ${schema}.instances where parent_id = $1 and status = 'done') as done,
                    (select count(*)::int from ${schema}.instances where parent_id = $1 and status <> 'done') as unfinished,
                    (select status = 'done' from ${schema}.instances where id = $1) as finished`,
            [parentId],
          );
          // The join step's own committed outcomes, from its history (the sweep's wake-up is recorded
          // as from 'join' too, outcome 'joined').
          const history = await producer!.history(parentId!);
          const row = rows[0]!;
          return {
            childrenFinished: row.done,
            childrenUnfinished: row.unfinished,
            joinCommits: history.filter((t) => t.fromStep === "join" && t.outcome !== "joined").length,
            finished: row.finished,
          };
        },
        stop: () => engine.stop(),
      };
    },

    async teardown() {
      await producer?.stop();
      await admin?.end();
    },
  } satisfies BenchSystem;
}
