/**
 * A TCP proxy in front of Postgres (node:net) that breaks a connection at a chosen statement, to
 * make commits ambiguous. It reads the frontend protocol: simple queries ('Q') and the statements
 * of the extended protocol (a Parse names a statement, a Bind executes it), so it knows which
 * statement each connection runs, including named prepared statements bound again and again.
 *
 * `cut(match, { mode })` arms it for the next statement `match` accepts:
 * - "reply-lost": the statement goes through; when the server's ReadyForQuery for it arrives
 *   (so the statement ran and, outside a transaction block or as a COMMIT, committed), the reply
 *   is dropped and both sockets closed. The client sees a broken connection for a statement
 *   whose effect is in the database: the ambiguous commit.
 * - "before-send": the statement is never forwarded; both sockets close. Nothing of it ran.
 */
import { connect, createServer, type Server, type Socket } from "node:net";

export type CutMode = "reply-lost" | "before-send";

/** What a cut's predicate sees: the statement, and what this connection ran since its last BEGIN. */
export interface Statement {
  sql: string;
  /** Statements since the last `begin` on this connection (empty outside a transaction block). */
  transaction: readonly string[];
  /** Inside a transaction block (after BEGIN, before COMMIT or ROLLBACK). */
  inBlock: boolean;
  applicationName: string | undefined;
}

export interface CommitCutter {
  port: number;
  /** `base` (a postgres:// URL) pointed at the proxy. */
  url(base: string): string;
  /** Arms a cut for the next `times` statements `match` accepts (default 1); resolves once they were cut. */
  cut(match: (statement: Statement) => boolean, options?: { mode?: CutMode; times?: number }): Promise<void>;
  /** Every cut made so far: the statement and how. */
  readonly cuts: Array<{ sql: string; mode: CutMode }>;
  close(): Promise<void>;
}

interface Armed {
  match: (statement: Statement) => boolean;
  mode: CutMode;
  left: number;
  done: () => void;
}

interface Link {
  client: Socket;
  server: Socket;
  applicationName: string | undefined;
  statements: Map<string, string>;
  transaction: string[];
  inBlock: boolean;
  /** Set once a "reply-lost" statement went through: the server's replies are withheld until its ReadyForQuery. */
  withholding: boolean;
}

function cString(buffer: Buffer, from: number): { text: string; end: number } {
  const end = buffer.indexOf(0, from);
  return {
    text: buffer.subarray(from, end < 0 ? buffer.length : end).toString("utf8"),
    end: end < 0 ? buffer.length : end + 1,
  };
}

function startupApplicationName(packet: Buffer): string | undefined {
  if (packet.length < 8 || packet.readInt32BE(4) !== 196608) return undefined;
  const fields = packet.subarray(8, packet.readInt32BE(0)).toString("utf8").split("\0");
  for (let i = 0; i + 1 < fields.length; i += 2) if (fields[i] === "application_name") return fields[i + 1];
  return undefined;
}

export async function startCommitCutter(target: { host: string; port: number }): Promise<CommitCutter> {
  const links = new Set<Link>();
  const armed: Armed[] = [];
  const cuts: Array<{ sql: string; mode: CutMode }> = [];

  const take = (link: Link, sql: string): CutMode | undefined => {
    const statement = {
      sql,
      transaction: [...link.transaction],
      inBlock: link.inBlock,
      applicationName: link.applicationName,
    };
    const hit = armed.find((a) => a.left > 0 && a.match(statement));
    if (!hit) return undefined;
    hit.left -= 1;
    cuts.push({ sql, mode: hit.mode });
    if (hit.left === 0) {
      armed.splice(armed.indexOf(hit), 1);
      hit.done();
    }
    return hit.mode;
  };

  const track = (link: Link, sql: string) => {
    const word = sql.trim().toLowerCase();
    if (word.startsWith("begin")) link.inBlock = true;
    if (word.startsWith("begin") || word === "commit" || word === "rollback") link.transaction = [];
    if (word === "commit" || word === "rollback") link.inBlock = false;
    else if (link.inBlock && !word.startsWith("begin")) link.transaction.push(sql);
  };

  const server: Server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    const link: Link = {
      client,
      server: upstream,
      applicationName: undefined,
      statements: new Map(),
      transaction: [],
      inBlock: false,
      withholding: false,
    };
    links.add(link);
    const closeBoth = () => {
      client.destroy();
      upstream.destroy();
      links.delete(link);
    };
    let started = false;
    let pending = Buffer.alloc(0);
    client.on("data", (chunk: Buffer) => {
      pending = Buffer.concat([pending, chunk]);
      if (!started) {
        if (pending.length < 4) return;
        const length = pending.readInt32BE(0);
        if (pending.length < length) return;
        link.applicationName = startupApplicationName(pending.subarray(0, length));
        upstream.write(pending.subarray(0, length));
        pending = pending.subarray(length);
        started = true;
      }
      while (pending.length >= 5) {
        const length = pending.readInt32BE(1);
        if (pending.length < 1 + length) break;
        const message = pending.subarray(0, 1 + length);
        pending = pending.subarray(1 + length);
        const type = String.fromCharCode(message[0]!);
        let sql: string | undefined;
        if (type === "Q") sql = cString(message, 5).text;
        else if (type === "P") {
          const name = cString(message, 5);
          link.statements.set(name.text, cString(message, name.end).text);
        } else if (type === "B") {
          const portal = cString(message, 5);
          sql = link.statements.get(cString(message, portal.end).text);
        }
        if (sql !== undefined) {
          const mode = take(link, sql);
          if (mode === "before-send") return closeBoth();
          if (mode === "reply-lost") link.withholding = true;
          track(link, sql);
        }
        upstream.write(message);
      }
    });
    let replies = Buffer.alloc(0);
    upstream.on("data", (chunk: Buffer) => {
      if (!link.withholding) return void client.write(chunk);
      // Look for the ReadyForQuery that ends the cut statement; withhold everything up to it.
      replies = Buffer.concat([replies, chunk]);
      let at = 0;
      while (replies.length - at >= 5) {
        const length = replies.readInt32BE(at + 1);
        if (replies.length - at < 1 + length) break;
        if (replies[at] === "Z".charCodeAt(0)) return closeBoth();
        at += 1 + length;
      }
    });
    client.on("close", closeBoth);
    upstream.on("close", closeBoth);
    client.on("error", () => {});
    upstream.on("error", () => {});
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const address = server.address();
  const port = typeof address === "object" && address ? address.port : 0;

  return {
    port,
    cuts,
    url(base) {
      const url = new URL(base);
      url.hostname = "127.0.0.1";
      url.port = String(port);
      return url.toString();
    },
    cut(match, options = {}) {
      return new Promise<void>((resolve) =>
        armed.push({ match, mode: options.mode ?? "reply-lost", left: options.times ?? 1, done: resolve }),
      );
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const link of links) {
          link.client.destroy();
          link.server.destroy();
        }
        server.close(() => resolve());
      }),
  };
}
