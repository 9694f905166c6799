/** The command table: add a command here and it appears in `gen-durable --help`. */
import type { Command } from "../cli.js";
import { migrateCommand } from "./migrate.js";
import { sqlCommand } from "./sql.js";
import { statusCommand } from "./status.js";
import { listCommand } from "./list.js";
import { showCommand } from "./show.js";
import { signalCommand } from "./signal.js";
import { cancelCommand } from "./cancel.js";
import { retryCommand } from "./retry.js";
import { pruneCommand } from "./prune.js";
import { uiCommand } from "./ui.js";
import { graphCommand } from "./graph.js";
import { insertCommand } from "./insert.js";
import { pauseCommand, resumeCommand } from "./queues.js";
import { cronCommand } from "./cron.js";
import { checkCommand, moveCommand } from "./versions.js";

export const COMMANDS: readonly Command[] = [
  migrateCommand,
  sqlCommand,
  statusCommand,
  listCommand,
  showCommand,
  signalCommand,
  cancelCommand,
  retryCommand,
  insertCommand,
  pauseCommand,
  resumeCommand,
  cronCommand,
  pruneCommand,
  uiCommand,
  checkCommand,
  moveCommand,
  graphCommand,
];
