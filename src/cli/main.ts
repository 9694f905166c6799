#!/usr/bin/env node
// The `gen-durable` executable. See cli.ts for the command table and exit codes.
import { runCli } from "./cli.js";
import { COMMANDS } from "./commands/index.js";

const code = await runCli(process.argv.slice(2), COMMANDS, {
  out: (line) => process.stdout.write(line + "\n"),
  err: (line) => process.stderr.write(line + "\n"),
  env: process.env,
});
process.exitCode = code;
