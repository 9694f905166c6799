/** The gen-durable CLI for tests: as a child process, as a shell script runs it, or in this process. */
import { execFile } from "node:child_process";
import { fileURLToPath } from "node:url";
import { runCli } from "../../src/cli/cli.js";
import { COMMANDS } from "../../src/cli/commands/index.js";

export interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

const root = fileURLToPath(new URL("../../", import.meta.url));

/** `gen-durable ...args` as a process (`node --import tsx src/cli/main.ts`); DATABASE_URL is unset unless `env` sets it. */
export function spawnCli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const base = { ...process.env };
  delete base.DATABASE_URL;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ["--import", "tsx", "src/cli/main.ts", ...args],
      { cwd: root, env: { ...base, ...env }, timeout: 150_000 },
      (error, stdout, stderr) =>
        resolve({ code: error ? (typeof error.code === "number" ? error.code : null) : 0, stdout, stderr }),
    );
  });
}

/** The same entry point in this process, with `env` as its environment. */
export async function cliInProcess(args: string[], env: Record<string, string> = {}): Promise<Run> {
  let stdout = "";
  let stderr = "";
  const code = await runCli(args, COMMANDS, {
    out: (line) => (stdout += line + "\n"),
    err: (line) => (stderr += line + "\n"),
    env,
  });
  return { code, stdout, stderr };
}
