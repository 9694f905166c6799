/**
 * gen-durable, used the way SPEC.md shows it: a `defineJob` with a zod args
 * schema (so inserts pay for validation, as a real user's would), `migrate()`,
 * a pure-client engine (no queues) as the producer, and a separate engine with
 * `queues: { default: N }` as the worker. Defaults everywhere else
 * (poolSize 10, pollInterval 1s, group commit on, as shipped).
 */
import pg from "pg";
import { z } from "zod";
import { defineJob, GenDurable, migrate } from "../../src/index.js";
import type { BenchSystem, OnStart } from "./types.js";

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
    },

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
      const { rows } = await admin!.query<{ n: number }>(`select count(*)::int as n from ${schema}.instances where status = 'done'`);
      return rows[0]!.n;
    },

    async startWorker(concurrency, handler) {
      onStart = handler;
      const engine = new GenDurable({ connectionString: url, schema, queues: { default: concurrency }, machines: [Noop], ...poolOption });
      await engine.start();
      return {
        enqueue: async (i) => {
          await engine.insert(Noop, { args: { i } });
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
