/**
 * Recipe: import a file in chunks, in parallel on every node, and stop at the first bad chunk.
 * One job per chunk; the import joins them with `failFast`, so a failed chunk resumes it at once
 * and the chunks still running are cancelled. Without a failure the join runs when every chunk is
 * done, with their results in `ctx.children`.
 * In your own code the import is `from "gen-durable"`.
 */
import { z } from "zod";
import { defineJob, defineMachine } from "../src/index.js";

/** Imported rows, by chunk; a real job writes them to a table. */
export const imported = new Map<number, number>();

export const ImportChunk = defineJob({
  name: "ImportChunk",
  queue: "imports",
  maxAttempts: 2,
  args: z.object({ file: z.string(), chunk: z.number(), rows: z.array(z.string()) }),
  perform: async ({ chunk, rows }) => {
    const bad = rows.findIndex((row) => !/^\d+,/.test(row));
    if (bad >= 0) throw new Error(`chunk ${chunk}, row ${bad}: ${JSON.stringify(rows[bad])} has no numeric id`);
    imported.set(chunk, rows.length);
    return rows.length;
  },
});

export const Import = defineMachine({
  name: "Import",
  queue: "imports",
  state: z.object({ file: z.string(), lines: z.array(z.string()), chunkSize: z.number().default(100) }),
  steps: {
    start: (ctx) => {
      const { file, lines, chunkSize } = ctx.state;
      const chunks = Array.from({ length: Math.ceil(lines.length / chunkSize) }, (_, chunk) => ({
        machine: ImportChunk,
        args: { file, chunk, rows: lines.slice(chunk * chunkSize, (chunk + 1) * chunkSize) },
      }));
      return ctx.spawn(chunks, "report", undefined, { join: { failFast: true } });
    },
    report: (ctx) => {
      const failed = ctx.children.find((c) => c.status === "failed");
      if (failed) return ctx.done({ ok: false, error: (failed.error as { message: string }).message });
      return ctx.done({ ok: true, rows: ctx.children.reduce((sum, c) => sum + (c.result as number), 0) });
    },
  },
});
