/**
 * The LISTEN connection. NOTIFY is only an accelerator — polling stays correct
 * without it — so this connection may fail at any time: it reconnects with
 * backoff, re-LISTENs, and tells the engine to wake everything on reconnect
 * (notifications sent while it was down are lost).
 *
 * A socket can also die silently (a NAT entry expired, a peer vanished without
 * a FIN): no error, no 'end', just no more notifications. Every round trip on
 * this connection therefore has a deadline of one heartbeat — the ping, the
 * connect and the LISTEN — and a connection that misses one is destroyed (not
 * ended: ending writes a goodbye that a dead socket never delivers, so the
 * socket and the server's backend would linger) and replaced. Without the
 * deadline on connect, one reconnect attempt into a black hole would hang
 * forever and the listener would never come back (tested by
 * test/chaos/faults.test.ts with a half-open proxy).
 */
import pg from "pg";
import { isPooled } from "./pooler.js";

export interface ListenerOptions {
  clientConfig: pg.ClientConfig;
  channel: string;
  onNotify: (payload: string) => void;
  /** Called after every (re)connection: anything may have been missed. */
  onConnected: () => void;
  onError: (error: unknown) => void;
  heartbeatMs: number;
  /**
   * The connection goes through a pooler, which cannot carry LISTEN (db/pooler.ts): the listener
   * gives up for good, and the engine finds work by polling.
   */
  onPooled: () => void;
}

export class Listener {
  private client: pg.Client | undefined;
  private stopped = false;
  private retryMs = 100;
  private heartbeat: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;
  private pinging = false;

  constructor(private readonly options: ListenerOptions) {}

  async start(): Promise<void> {
    this.stopped = false;
    await this.connect().catch((error: unknown) => {
      this.options.onError(error);
      this.scheduleReconnect();
    });
    if (this.stopped) return; // stopped meanwhile, or the connection is pooled (onPooled)
    this.heartbeat = setInterval(() => void this.ping(), this.options.heartbeatMs);
    this.heartbeat.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.heartbeat);
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = undefined;
    if (client)
      await withDeadline(client.end(), this.options.heartbeatMs, "LISTEN connection did not close").catch(() =>
        destroy(client),
      );
  }

  private async connect(): Promise<void> {
    const { clientConfig, heartbeatMs } = this.options;
    const client = new pg.Client({
      ...clientConfig,
      // A connect into a black hole must fail rather than hang (see the file comment).
      connectionTimeoutMillis: clientConfig.connectionTimeoutMillis || heartbeatMs,
      // Lets the OS notice a dead peer too, independently of our ping.
      keepAlive: true,
    });
    client.on("error", (error) => this.drop(client, error));
    client.on("end", () => this.drop(client, undefined));
    client.on("notification", (message) => this.options.onNotify(message.payload ?? ""));
    try {
      await client.connect();
      if (this.stopped) {
        destroy(client);
        return;
      }
      if (await withDeadline(isPooled(client), heartbeatMs, "LISTEN connection did not answer")) {
        destroy(client);
        this.stopped = true;
        clearInterval(this.heartbeat);
        this.options.onPooled();
        return;
      }
      await withDeadline(client.query(`listen "${this.options.channel}"`), heartbeatMs, "LISTEN did not answer");
    } catch (error) {
      // Not ours yet (this.client is unset), so drop() would ignore it: close it here.
      destroy(client);
      throw error;
    }
    if (this.stopped) {
      destroy(client);
      return;
    }
    this.client = client;
    this.retryMs = 100;
    this.options.onConnected();
  }

  private drop(client: pg.Client, error: unknown): void {
    if (this.client !== client) return;
    this.client = undefined;
    if (error) this.options.onError(error);
    destroy(client);
    this.scheduleReconnect();
  }

  private scheduleReconnect(): void {
    if (this.stopped || this.reconnectTimer) return;
    const delay = this.retryMs;
    this.retryMs = Math.min(this.retryMs * 2, 5000);
    this.reconnectTimer = setTimeout(() => {
      this.reconnectTimer = undefined;
      if (this.stopped || this.client) return;
      this.connect().catch((error: unknown) => {
        this.options.onError(error);
        this.scheduleReconnect();
      });
    }, delay);
    this.reconnectTimer.unref();
  }

  /** A ping that does not answer within the heartbeat means a dead socket: drop it and reconnect. */
  private async ping(): Promise<void> {
    const client = this.client;
    // One ping at a time: a slow answer is judged by its own deadline, not stacked on.
    if (!client || this.pinging) return;
    this.pinging = true;
    try {
      await withDeadline(client.query("select 1"), this.options.heartbeatMs, "LISTEN connection did not answer a ping");
    } catch (error) {
      this.drop(client, error);
    } finally {
      this.pinging = false;
    }
  }
}

function withDeadline<T>(work: Promise<T>, ms: number, message: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${message} within ${ms} ms`)), ms);
  });
  work.catch(() => {}); // settles after the deadline, if ever: nobody waits for it then
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
}

/** Closes the socket at once (see the file comment); the pending queries fail and 'end' follows. */
function destroy(client: pg.Client): void {
  const stream = (client as unknown as { connection?: { stream?: { destroy?: () => void } } }).connection?.stream;
  if (typeof stream?.destroy === "function") stream.destroy();
  else client.end().catch(() => {});
}
