import { migrate, currentVersion, LATEST_MIGRATION } from "../../migrate.js";
import { EXIT_FAILURE, EXIT_OK, type Command } from "../cli.js";
import {
  DATABASE_URL_OPTION,
  databaseUrlFrom,
  describeDbError,
  openCliPool,
  redact,
  SCHEMA_OPTION,
  schemaFrom,
  urlProblem,
} from "../db.js";

export const migrateCommand: Command = {
  name: "migrate",
  summary: "create or upgrade gen-durable's tables (idempotent, safe to run concurrently)",
  description: [
    "Applies every pending migration to the schema in one transaction, under an",
    "advisory lock: running it twice, or from ten processes at once, is harmless.",
  ].join("\n"),
  options: { schema: SCHEMA_OPTION, "database-url": DATABASE_URL_OPTION },
  async run(values, io) {
    const schema = schemaFrom(values, this);
    const url = databaseUrlFrom(values, io, this);
    const problem = urlProblem(url);
    if (problem) {
      io.err(`gen-durable migrate: ${problem}`);
      return EXIT_FAILURE;
    }
    const pool = openCliPool(url);
    try {
      const applied = await migrate({ pool, schema });
      if (applied.length === 0) {
        io.out(
          `schema ${schema} is up to date (migration ${await currentVersion(pool, schema)} of ${LATEST_MIGRATION})`,
        );
      } else {
        const first = applied[0]!;
        const last = applied[applied.length - 1]!;
        io.out(
          first === last
            ? `applied migration ${first} to schema ${schema}`
            : `applied migrations ${first}..${last} to schema ${schema}`,
        );
      }
      return EXIT_OK;
    } catch (error) {
      io.err(`gen-durable migrate: could not migrate schema ${schema} at ${redact(url)}: ${describeDbError(error)}`);
      return EXIT_FAILURE;
    } finally {
      await pool.end().catch(() => {});
    }
  },
};
