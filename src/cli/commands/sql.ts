import { Migration } from "../../migrate.js";
import { EXIT_OK, type Command } from "../cli.js";
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
    down: { type: "boolean", description: "print the SQL that drops the schema instead" },
  },
  async run(values, io) {
    const schema = schemaFrom(values, this);
    io.out(values.down ? Migration.down({ schema }) : Migration.up({ schema }));
    return EXIT_OK;
  },
};
