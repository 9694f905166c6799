/**
 * Real child processes for the chaos tests: TypeScript scripts, talking to the
 * test over IPC, SIGKILLed and respawned by a controller.
 *
 * How a script runs: by default it is bundled once per test process with
 * esbuild (dependencies left external) and forked with plain `node`; set
 * GD_CHILD_LOADER=tsx to fork the .ts file through `--import tsx` instead. Both
 * work; the bundle boots with about a third of the CPU (≈0.35 s vs ≈1.2 s),
 * which decides how fast a SIGKILLed worker is back on a loaded 2-core machine.
 *
 * Every child forked here is tracked; `killAllChildren()` (called by `Fleet.stop`,
 * by `useChildren()`'s afterAll, and on the test process's exit) SIGKILLs the
 * ones still alive, so a test never leaks processes. Children also exit on their
 * own when the IPC channel closes (see `childSide`).
 */
import { fork, type ChildProcess } from "node:child_process";
import { mkdirSync, rmSync } from "node:fs";
import { basename, dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { buildSync } from "esbuild";
import { afterAll } from "vitest";

/** What a child reports over IPC. `type` is the only field the harness reads. */
export interface ChildMessage {
  type: string;
  [key: string]: unknown;
}

export interface Child {
  name: string;
  process: ChildProcess;
  pid: number;
  /** Every message received so far, oldest first. */
  messages: ChildMessage[];
  /** Last ~64 KB of stdout+stderr, for failure reports. */
  output(): string;
  /** Resolves when the process has exited (never rejects). */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Resolves with the first message of `type` (already received or future); rejects after `timeoutMs` or if the child exits first. */
  waitFor(type: string, timeoutMs?: number): Promise<ChildMessage>;
  send(message: ChildMessage): void;
  alive(): boolean;
}

const live = new Set<ChildProcess>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort: the test process is going away, take the children with it.
  process.once("exit", () => {
    for (const child of live) child.kill("SIGKILL");
  });
}

const repoRoot = join(dirname(fileURLToPath(import.meta.url)), "..", "..");
const bundles = new Map<string, string>();

/** The script bundled into node_modules/.cache (so `pg`, `zod`... resolve from the repo), once per test process. */
function bundled(source: string): string {
  let out = bundles.get(source);
  if (out) return out;
  const dir = join(repoRoot, "node_modules", ".cache", "gen-durable-chaos");
  mkdirSync(dir, { recursive: true });
  out = join(dir, `${basename(source, ".ts")}-${process.pid}-${bundles.size}.mjs`);
  buildSync({
    entryPoints: [source],
    outfile: out,
    bundle: true,
    platform: "node",
    format: "esm",
    packages: "external",
    target: "node20",
    logLevel: "error",
  });
  bundles.set(source, out);
  return out;
}

function removeBundles(): void {
  for (const out of bundles.values()) rmSync(out, { force: true });
  bundles.clear();
}

/** Forks `script` (a .ts file, e.g. `new URL("./fixtures/worker.ts", import.meta.url)`); see the file comment for how. */
export function forkChild(
  script: URL | string,
  options: { name: string; env?: Record<string, string>; args?: string[] },
): Child {
  installExitHook();
  const source = typeof script === "string" ? script : fileURLToPath(script);
  const useTsx = process.env.GD_CHILD_LOADER === "tsx";
  const path = useTsx ? source : bundled(source);
  const env: Record<string, string> = {};
  for (const [key, value] of Object.entries(process.env)) {
    // Do not hand vitest's own loader flags to the child.
    if (value !== undefined && key !== "NODE_OPTIONS") env[key] = value;
  }
  const child = fork(path, options.args ?? [], {
    execArgv: useTsx ? ["--import", "tsx"] : [],
    env: { ...env, ...options.env, GD_CHILD_NAME: options.name },
    stdio: ["ignore", "pipe", "pipe", "ipc"],
    serialization: "advanced",
  });
  if (child.pid === undefined) throw new Error(`could not fork ${path}`);
  live.add(child);
  let output = "";
  const collect = (chunk: Buffer) => {
    output += chunk.toString();
    if (output.length > 65_536) output = output.slice(-65_536);
  };
  child.stdout?.on("data", collect);
  child.stderr?.on("data", collect);
  const messages: ChildMessage[] = [];
  const waiters = new Set<() => void>();
  child.on("message", (message) => {
    messages.push(message as ChildMessage);
    for (const waiter of [...waiters]) waiter();
  });
  let hasExited = false;
  /** How it exited, for the errors of waitFor: a child that dies without a word says only this. */
  let exitedWith = "";
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => {
    child.once("exit", (code, signal) => {
      hasExited = true;
      exitedWith = signal ? `signal ${signal}` : `code ${code}`;
      live.delete(child);
      for (const waiter of [...waiters]) waiter();
      resolve({ code, signal });
    });
  });
  child.on("error", () => {});
  const handle: Child = {
    name: options.name,
    process: child,
    pid: child.pid,
    messages,
    output: () => output,
    exited,
    alive: () => !hasExited,
    send(message) {
      if (!hasExited && child.connected) child.send(message, (error) => void error);
    },
    waitFor(type, timeoutMs = 30_000) {
      return new Promise((resolve, reject) => {
        const check = () => {
          const found = messages.find((m) => m.type === type);
          if (found) {
            finish();
            resolve(found);
          } else if (hasExited) {
            finish();
            reject(
              new Error(
                `${options.name} (pid ${child.pid}) exited (${exitedWith}) before sending "${type}"; output:\n${output.slice(-4000)}`,
              ),
            );
          }
        };
        const timer = setTimeout(() => {
          finish();
          reject(
            new Error(
              `${options.name} (pid ${child.pid}) sent no "${type}" within ${timeoutMs} ms; output:\n${output.slice(-4000)}`,
            ),
          );
        }, timeoutMs);
        const finish = () => {
          clearTimeout(timer);
          waiters.delete(check);
        };
        waiters.add(check);
        check();
      });
    },
  };
  return handle;
}

/** SIGKILLs every child still alive and waits for them to be gone. */
export async function killAllChildren(): Promise<void> {
  const children = [...live];
  await Promise.all(
    children.map(
      (child) =>
        new Promise<void>((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          child.once("exit", () => resolve());
          child.kill("SIGKILL");
        }),
    ),
  );
}

/** Registers an afterAll that kills every child this file forked. Call at the top of a test file. */
export function useChildren(): void {
  afterAll(async () => {
    await killAllChildren();
    removeBundles();
  });
}

/**
 * A set of long-lived workers, one per slot. The controller may SIGKILL one;
 * any worker that exits (killed or crashed) is respawned in its slot when
 * `respawn` is on. Records every exit.
 */
export class Fleet {
  readonly slots: Array<Child | undefined> = [];
  readonly exits: Array<{
    slot: number;
    pid: number;
    code: number | null;
    signal: NodeJS.Signals | null;
    killedByUs: boolean;
  }> = [];
  readonly fatal: ChildMessage[] = [];
  /** Every message from every worker generation, tagged with the worker's name. */
  readonly received: ChildMessage[] = [];
  private readonly killed = new Set<number>();
  private stopping = false;
  private spawned = 0;

  constructor(
    private readonly spawnOne: (slot: number, generation: number) => Child,
    private readonly options: { respawn: boolean; readyTimeoutMs?: number } = { respawn: true },
  ) {}

  get spawnCount(): number {
    return this.spawned;
  }

  /** Starts `count` workers and waits until each has sent "ready". */
  async start(count: number): Promise<void> {
    await Promise.all(Array.from({ length: count }, (_, slot) => this.spawn(slot)));
  }

  private async spawn(slot: number): Promise<Child> {
    const child = this.spawnOne(slot, this.spawned++);
    this.slots[slot] = child;
    child.process.on("message", (m) => {
      const message = m as ChildMessage;
      this.received.push({ ...message, worker: child.name });
      if (message.type === "fatal") this.fatal.push({ ...message, worker: child.name });
    });
    void child.exited.then(({ code, signal }) => {
      const killedByUs = this.killed.delete(child.pid);
      this.exits.push({ slot, pid: child.pid, code, signal, killedByUs });
      if (this.slots[slot] === child && this.options.respawn && !this.stopping) void this.spawn(slot).catch(() => {});
    });
    await child.waitFor("ready", this.options.readyTimeoutMs ?? 30_000);
    return child;
  }

  /** Workers that are up and have said "ready". */
  ready(): Child[] {
    return this.slots.filter(
      (c): c is Child => c !== undefined && c.alive() && c.messages.some((m) => m.type === "ready"),
    );
  }

  /** SIGKILLs `child` (it is respawned if `respawn` is on); resolves once it is dead. */
  async kill(child: Child): Promise<void> {
    this.killed.add(child.pid);
    child.process.kill("SIGKILL");
    await child.exited;
  }

  /** Stops respawning and kills everything. */
  async stop(): Promise<void> {
    this.stopping = true;
    await Promise.all(
      this.slots.filter((c): c is Child => c !== undefined).map((c) => (c.alive() ? this.kill(c) : c.exited)),
    );
  }

  /** All output of the current workers, for a failure message. */
  outputs(): string {
    return this.slots.map((c) => `--- ${c?.name} (pid ${c?.pid})\n${c?.output().slice(-3000) ?? ""}`).join("\n");
  }
}

/** A small seeded PRNG (mulberry32), so a failing run can be replayed from its logged seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
