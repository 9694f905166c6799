/**
 * The command-line front end: a table of commands, each with its options
 * (parsed by `node:util` parseArgs), its help text and a `run` that returns an
 * exit code. Exit codes: 0 success, 1 the work failed (database unreachable,
 * migration error), 2 the command line was wrong. Add a command by writing a
 * `Command` and listing it in `commands/index.ts`.
 */
import { parseArgs, type ParseArgsConfig } from "node:util";
import { readFileSync } from "node:fs";
import { didYouMean } from "../suggest.js";
import { scrub, secretsIn } from "./redact.js";

export const EXIT_OK = 0;
export const EXIT_FAILURE = 1;
export const EXIT_USAGE = 2;

/** Where a command writes and what it reads from its surroundings (injectable for tests). */
export interface Io {
  out(line: string): void;
  err(line: string): void;
  env: Readonly<Record<string, string | undefined>>;
}

type Options = NonNullable<ParseArgsConfig["options"]>;
type OptionSpec = Options[string] & { description: string; valueName?: string };

export interface Command {
  name: string;
  /** One line, shown in the command list. */
  summary: string;
  /** Shown under "usage" by `gen-durable <command> --help`. */
  description: string;
  options: Record<string, OptionSpec>;
  /** Operands after the command, in order (e.g. `show <target>`); a command without any takes only options. */
  positionals?: ReadonlyArray<{ name: string; description: string; optional?: boolean; variadic?: boolean }>;
  run(values: Record<string, string | boolean | undefined>, io: Io, positionals: string[]): Promise<number>;
}

/** A wrong command line: printed with a pointer to --help, exit code 2. */
export class UsageError extends Error {
  constructor(
    message: string,
    readonly command?: Command,
  ) {
    super(message);
  }
}

const GLOBAL_OPTIONS: Record<string, OptionSpec> = {
  help: { type: "boolean", short: "h", description: "show help" },
};

function usageLine(command: Command): string {
  const parts = Object.entries(command.options).map(([name, spec]) =>
    spec.type === "string" ? `[--${name} ${spec.valueName ?? "value"}]` : `[--${name}]`,
  );
  const operands = (command.positionals ?? []).map(
    (p) => (p.optional ? `[${p.name}]` : `<${p.name}>`) + (p.variadic ? "..." : ""),
  );
  return `gen-durable ${[command.name, ...operands, ...parts].join(" ")}`;
}

export function commandHelp(command: Command): string {
  const all = { ...command.options, ...GLOBAL_OPTIONS };
  const rows = Object.entries(all).map(([name, spec]) => {
    const value = spec.type === "string" ? ` <${spec.valueName ?? "value"}>` : "";
    const flag = `${spec.short ? `-${spec.short}, ` : "    "}--${name}${value}`;
    return `  ${flag.padEnd(30)} ${spec.description}`;
  });
  const operands = (command.positionals ?? []).map((p) => `  ${p.name.padEnd(30)} ${p.description}`);
  return [
    `usage: ${usageLine(command)}`,
    "",
    command.description,
    "",
    ...(operands.length ? ["arguments:", ...operands, ""] : []),
    "options:",
    ...rows,
  ].join("\n");
}

export function mainHelp(commands: readonly Command[]): string {
  const width = Math.max(...commands.map((c) => c.name.length)) + 2;
  return [
    "usage: gen-durable <command> [options]",
    "",
    "gen-durable: Postgres-backed durable execution for TypeScript.",
    "",
    "commands:",
    ...commands.map((c) => `  ${c.name.padEnd(width)} ${c.summary}`),
    "",
    "options:",
    "  -h, --help       show help (also: gen-durable <command> --help)",
    "  -v, --version    print the version",
    "",
    "The database is DATABASE_URL unless --database-url is given.",
  ].join("\n");
}

function version(): string {
  // ../../package.json from both src/cli/ and dist/cli/.
  try {
    const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
      version?: string;
    };
    return pkg.version ?? "unknown";
  } catch {
    return "unknown";
  }
}

function parseCommandArgs(
  command: Command,
  args: string[],
): { values: Record<string, string | boolean | undefined>; positionals: string[] } {
  const options: Options = {};
  for (const [name, { type, short }] of Object.entries({ ...command.options, ...GLOBAL_OPTIONS })) {
    options[name] = short ? { type, short } : { type };
  }
  try {
    const parsed = parseArgs({ args, options, strict: true, allowPositionals: command.positionals !== undefined });
    return { values: parsed.values as Record<string, string | boolean | undefined>, positionals: parsed.positionals };
  } catch (error) {
    const code = (error as { code?: string }).code;
    const message = error instanceof Error ? error.message : String(error);
    if (code === "ERR_PARSE_ARGS_UNKNOWN_OPTION") {
      const name = /Unknown option '([^']+)'/.exec(message)?.[1] ?? "?";
      const known = Object.keys(options).map((o) => `--${o}`);
      throw new UsageError(`unknown option ${name}${didYouMean(name, known)}`, command);
    }
    if (code === "ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL") {
      const arg = /Unexpected argument '([^']*)'/.exec(message)?.[1];
      const shown = arg === undefined ? "" : JSON.stringify(arg);
      throw new UsageError(
        `unexpected argument ${shown}: ${command.name} takes only options`.replace("  ", " "),
        command,
      );
    }
    if (code === "ERR_PARSE_ARGS_INVALID_OPTION_VALUE") {
      const name = /Option '(?:-\w, )?(--[\w-]+)/.exec(message)?.[1];
      throw new UsageError(name ? `option ${name} needs a value` : message, command);
    }
    throw new UsageError(message, command);
  }
}

/** Runs one command line (without `node` and the script) and returns the exit code. */
export async function runCli(argv: readonly string[], commands: readonly Command[], io: Io): Promise<number> {
  const [first, ...rest] = argv;
  try {
    if (first === undefined) {
      io.err(mainHelp(commands));
      return EXIT_USAGE;
    }
    if (first === "-h" || first === "--help") {
      io.out(mainHelp(commands));
      return EXIT_OK;
    }
    if (first === "-v" || first === "--version") {
      io.out(version());
      return EXIT_OK;
    }
    if (first === "help") {
      const target = rest[0] === undefined ? undefined : commands.find((c) => c.name === rest[0]);
      if (rest[0] !== undefined && !target) throw new UsageError(unknownCommand(rest[0], commands));
      io.out(target ? commandHelp(target) : mainHelp(commands));
      return EXIT_OK;
    }
    const command = commands.find((c) => c.name === first);
    if (!command) throw new UsageError(unknownCommand(first, commands));
    const { values, positionals } = parseCommandArgs(command, rest);
    if (values.help) {
      io.out(commandHelp(command));
      return EXIT_OK;
    }
    checkPositionals(command, positionals);
    return await command.run(values, io, positionals);
  } catch (error) {
    // Both may echo the command line (a URL passed where an argument goes) or,
    // for a bug, whatever the failing code held: no password of it gets out.
    const secrets = commandLineSecrets(argv, io.env);
    if (error instanceof UsageError) {
      io.err(scrub(`gen-durable: ${error.message}`, secrets));
      io.err(
        error.command
          ? `usage: ${usageLine(error.command)}  (see gen-durable ${error.command.name} --help)`
          : "see gen-durable --help",
      );
      return EXIT_USAGE;
    }
    // Bugs: say so plainly, with the stack, since nobody expected this.
    io.err(
      scrub(
        `gen-durable: unexpected error: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}`,
        secrets,
      ),
    );
    return EXIT_FAILURE;
  }
}

/** The passwords in DATABASE_URL and in any argument (`--database-url=URL` included). */
function commandLineSecrets(argv: readonly string[], env: Io["env"]): string[] {
  const texts = [
    env.DATABASE_URL ?? "",
    ...argv,
    ...argv.map((arg) => (arg.startsWith("--") && arg.includes("=") ? arg.slice(arg.indexOf("=") + 1) : "")),
  ];
  return texts.flatMap(secretsIn);
}

/** Too few or too many operands is a usage error naming the first one missing or extra. */
function checkPositionals(command: Command, positionals: string[]): void {
  const specs = command.positionals ?? [];
  const missing = specs.slice(positionals.length).find((p) => !p.optional);
  if (missing) throw new UsageError(`missing argument <${missing.name}>: ${missing.description}`, command);
  if (positionals.length > specs.length && !specs[specs.length - 1]?.variadic) {
    throw new UsageError(
      `unexpected argument ${JSON.stringify(positionals[specs.length])}: ` +
        `${command.name} takes ${specs.length === 1 ? "one argument" : `${specs.length} arguments`}`,
      command,
    );
  }
}

function unknownCommand(name: string, commands: readonly Command[]): string {
  if (name.startsWith("-"))
    return `unknown option ${name}${didYouMean(name, ["--help", "--version"])}; a command comes first`;
  return `unknown command ${JSON.stringify(name)}${didYouMean(
    name,
    commands.map((c) => c.name),
  )}; commands are ${commands.map((c) => c.name).join(", ")}`;
}
