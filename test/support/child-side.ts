/**
 * The child side of test/support/worker-process.ts, for scripts forked by the
 * chaos tests. Imports nothing from vitest (it runs outside the test runner).
 */
import type { ChildMessage } from "./worker-process.js";

/**
 * For child scripts: reports crashes to the parent, exits when the parent goes
 * away, and offers the barrier (`await gate("go")` resolves on the parent's "go").
 */
export function childSide(): {
  send(message: ChildMessage): Promise<void>;
  gate(type: string): Promise<ChildMessage>;
  /** Sends `message`, then closes the IPC channel (the process then exits). */
  finish(message: ChildMessage): Promise<void>;
} {
  if (!process.send) throw new Error("childSide(): this script must be forked with an IPC channel");
  const send = (message: ChildMessage) =>
    new Promise<void>((resolve) => {
      if (!process.connected) return resolve();
      process.send!(message, undefined, {}, () => resolve());
    });
  process.on("disconnect", () => process.exit(0));
  process.on("unhandledRejection", (error) => {
    void send({ type: "fatal", kind: "unhandledRejection", error: String((error as Error)?.stack ?? error) });
  });
  process.on("uncaughtException", (error) => {
    void send({ type: "fatal", kind: "uncaughtException", error: String(error?.stack ?? error) }).then(() =>
      process.exit(70),
    );
  });
  const received: ChildMessage[] = [];
  const waiters = new Set<() => void>();
  process.on("message", (m) => {
    received.push(m as ChildMessage);
    for (const waiter of [...waiters]) waiter();
  });
  return {
    send,
    async finish(message) {
      await send(message);
      process.disconnect();
    },
    gate(type) {
      return new Promise((resolve) => {
        const check = () => {
          const found = received.find((m) => m.type === type);
          if (found) {
            waiters.delete(check);
            resolve(found);
          }
        };
        waiters.add(check);
        check();
      });
    },
  };
}

/** Reads a required environment variable in a child script. */
export function env(name: string): string {
  const value = process.env[name];
  if (value === undefined || value === "") throw new Error(`child script: environment variable ${name} is required`);
  return value;
}
