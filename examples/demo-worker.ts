/**
 * A worker node for the demo: a separate Node.js process that runs the
 * Fulfilment machine. The demo forks it, SIGKILLs it mid-step, and forks
 * another. Settings come from the environment: DATABASE_URL, DEMO_SCHEMA,
 * DEMO_WORKER (a name for the output).
 */
import { GenDurable } from "../src/index.js";
import { Fulfilment } from "./machines.js";

const engine = new GenDurable({
  connectionString: process.env.DATABASE_URL!,
  schema: process.env.DEMO_SCHEMA!,
  queues: { fulfilment: 1 },
  machines: [Fulfilment],
  // Short, so that recovering from a dead worker takes seconds, not the default 30 s.
  leaseDuration: "2s",
  reaperInterval: "500ms",
  pollInterval: "200ms",
  shutdownGrace: "1s",
});

let stopping = false;
async function shutdown(code: number): Promise<void> {
  if (stopping) return;
  stopping = true;
  await engine.stop().catch(() => {});
  process.exit(code);
}
process.on("SIGTERM", () => void shutdown(0));
process.on("SIGINT", () => void shutdown(0));
// The demo went away: do not linger.
process.on("disconnect", () => void shutdown(0));

try {
  await engine.start();
  process.send?.({ type: "ready", pid: process.pid });
} catch (error) {
  console.error(`demo worker: ${error instanceof Error ? error.message : String(error)}`);
  await shutdown(1);
}
