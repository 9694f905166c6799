import { ConfigError } from "../../errors.js";
import { Migration } from "../../migrate.js";
import { EXIT_OK, UsageError, type Command } from "../cli.js";
import { SCHEMA_OPTION, schemaFrom } from "../db.js";

export const sqlCommand: Command = {
  name: "sql",
  summary: "print the migration SQL, for your own migration tool",
  description: [
    "Prints the SQL that creates gen-durable's schema from nothing (Migration.up()),",
    "or with --down the SQL that removes it (Migration.down()). Connects to nothing.",
  ].join("\n"),
  options: {
    schema: SCHEMA_OPTION,
    down: { type: "boolean", description: "print the SQL that drops gen-durable's objects (and its schema) instead" },
  },
  async run(values, io) {
    const schema = schemaFrom(values, this);
    let sql: string;
    try {
      sql = values.down ? Migration.down({ schema }) : Migration.up({ schema });
    } catch (error) {
      // A schema gen-durable refuses (public): the command line was wrong.
      if (error instanceof ConfigError) throw new UsageError(error.message, this);
      throw error;
    }
    io.out(sql);
    return EXIT_OK;
  },
};
