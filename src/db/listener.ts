/**
 * The LISTEN connection. NOTIFY is only an accelerator — polling stays correct
 * without it — so this connection may fail at any time: it reconnects with
 * backoff, re-LISTENs, and tells the engine to wake everything on reconnect
 * (notifications sent while it was down are lost). A periodic ping detects a
 * socket that died silently.
 */
import pg from "pg";

export interface ListenerOptions {
  clientConfig: pg.ClientConfig;
  channel: string;
  onNotify: (payload: string) => void;
  /** Called after every (re)connection: anything may have been missed. */
  onConnected: () => void;
  onError: (error: unknown) => void;
  heartbeatMs: number;
}

export class Listener {
  private client: pg.Client | undefined;
  private stopped = false;
  private retryMs = 100;
  private heartbeat: NodeJS.Timeout | undefined;
  private reconnectTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: ListenerOptions) {}

  async start(): Promise<void> {
    this.stopped = false;
    await this.connect().catch((error: unknown) => {
      this.options.onError(error);
      this.scheduleReconnect();
    });
    this.heartbeat = setInterval(() => void this.ping(), this.options.heartbeatMs);
    this.heartbeat.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.heartbeat);
    clearTimeout(this.reconnectTimer);
    const client = this.client;
    this.client = undefined;
    await client?.end().catch(() => {});
  }

  private async connect(): Promise<void> {
    const client = new pg.Client(this.options.clientConfig);
    client.on("error", (error) => this.drop(client, error));
    client.on("end", () => this.drop(client, undefined));
    client.on("notification", (message) => this.options.onNotify(message.payload ?? ""));
    await client.connect();
    if (this.stopped) {
      await client.end().catch(() => {});
      return;
    }
    await client.query(`listen "${this.options.channel}"`);
    this.client = client;
    this.retryMs = 100;
    this.options.onConnected();
  }

  private drop(client: pg.Client, error: unknown): void {
    if (this.client !== client) return;
    this.client = undefined;
    if (error) this.options.onError(error);
    client.end().catch(() => {});
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
    if (!client) return;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error("LISTEN connection did not answer a ping")), this.options.heartbeatMs);
    });
    try {
      await Promise.race([client.query("select 1"), timeout]);
    } catch (error) {
      this.drop(client, error);
    } finally {
      clearTimeout(timer);
    }
  }
}
