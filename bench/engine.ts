/**
 * The engine the bench runs: the compiled package in dist/, what `npm install gen-durable` gives a
 * user, as graphile-worker and pg-boss run from their compiled JavaScript. bench/run.sh builds it
 * first. Run through tsx, the TypeScript sources carry tsx's own additions (every function created
 * at run time, closures per step included, is named by a helper call), which cost gen-durable
 * about a tenth of its Node CPU per job and a tenth of its throughput here: a handicap its users
 * never have. Types come from the sources, so the bench type-checks without a build.
 */
import { existsSync } from "node:fs";
import { pathToFileURL } from "node:url";
import type * as Engine from "../src/index.js";

/**
 * BENCH_GEN_DURABLE_DIST names another compiled build (a directory like dist/), to measure one
 * revision against another: bench/README.md, "Before and after a change".
 */
const chosen = process.env.BENCH_GEN_DURABLE_DIST;
export const genDurableBuild = chosen ?? "dist/";
const compiled = chosen
  ? pathToFileURL(`${chosen.replace(/\/$/, "")}/index.js`)
  : new URL("../dist/index.js", import.meta.url);
if (!existsSync(compiled)) {
  throw new Error(`bench: ${compiled.pathname} is missing; run \`npm run build\` first (bench/run.sh does)`);
}
const engine = (await import(compiled.href)) as typeof Engine;
export const { defineJob, defineMachine, GenDurable, migrate, createDashboard } = engine;
export type GenDurable = Engine.GenDurable;
export type { InsertManyItem } from "../src/index.js";
