/** The command table: add a command here and it appears in `gen-durable --help`. */
import type { Command } from "../cli.js";
import { migrateCommand } from "./migrate.js";
import { sqlCommand } from "./sql.js";

export const COMMANDS: readonly Command[] = [migrateCommand, sqlCommand];
