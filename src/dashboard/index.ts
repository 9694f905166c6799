/**
 * The web dashboard: a plain Node.js `(req, res)` handler that reads the
 * database directly (no engine needs to run in its process) and acts through
 * the engine's client API (retry, cancel, signal), so an action here means
 * exactly what it means from code or the CLI.
 *
 * Safe by default: every value is escaped (html.ts); actions are POSTs that
 * carry a per-server token and must come from the same origin; `readOnly`
 * hides them and refuses every POST; `token` demands it (HTTP Basic password,
 * Bearer, or once as ?token= which sets a cookie) on every request.
 *
 * Live: `<base>/live` is an event stream per page. One timer per distinct page
 * renders it every `liveIntervalMs` and sends it to every tab showing that
 * page only when it changed, so ten tabs on the overview cost the database
 * what one does.
 */
import { createHash, randomBytes, timingSafeEqual } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import type pg from "pg";
import type { AnyMachine } from "../define.js";
import { GenDurable } from "../engine.js";
import { openPool } from "../db/pool.js";
import { ConfigError, GenDurableError, ValidationError } from "../errors.js";
import { describe as describeValue } from "../duration.js";
import { checkSchemaName } from "../names.js";
import { CLIENT_SCRIPT, STYLESHEET } from "./assets.js";
import { toMermaid, toSvg } from "./graph.js";
import { html, raw, type Safe } from "./html.js";
import {
  BadRequest,
  csrfField,
  describeFilter,
  filterFrom,
  filterQuery,
  instancePage,
  instancesPage,
  link,
  machineGraph,
  machinePage,
  machinesPage,
  makeContext,
  overviewPage,
  windowFrom,
  type Page,
  type PageContext,
} from "./pages.js";

/** What `createDashboard` takes: a `pool` or a `connectionString`, and how to serve. */
export interface DashboardOptions {
  /** A pg.Pool to use (not ended by close()), or... */
  pool?: pg.Pool;
  /** ...a connection string: the dashboard opens (and closes) a small pool of its own. */
  connectionString?: string;
  /** The gen-durable schema (default "gen_durable"). */
  schema?: string;
  /** Hide every action and refuse every POST. */
  readOnly?: boolean;
  /**
   * Where the dashboard is mounted, e.g. "/admin/durable" (default: the root). Works whether or not the router
   * strips it.
   */
  basePath?: string;
  /** When set, every request must present it (HTTP Basic password, `Authorization: Bearer`, or `?token=` once). */
  token?: string;
  /** How often a live page is re-read, in ms (default 2000). */
  liveIntervalMs?: number;
  /** How long the hour's chart and machine graphs are reused, in ms (default 10000). */
  cacheMs?: number;
  /** The most instances one "retry/cancel all matching" acts on (default 10000). */
  maxBulk?: number;
  /**
   * Your machine definitions, optional: their declared steps appear in the graphs even before any
   * instance ran them (the initial step marked), and they are listed before any instance exists.
   */
  machines?: readonly AnyMachine[];
}

/** The dashboard: a Node request handler for http.createServer, Express, or a raw Fastify request. */
export type DashboardHandler = ((req: IncomingMessage, res: ServerResponse) => void) & {
  /** Ends live streams and timers, and the pool if the dashboard opened it. */
  close(): Promise<void>;
  /** The base path links are built with ("" at the root). */
  readonly basePath: string;
};

const COOKIE = "gen_durable_dashboard";
/** Distinct live pages (path and query) served at once; a tab beyond them just does not update. */
const MAX_LIVE_PAGES = 100;
const MAX_BODY = 1024 * 1024;
const DEFAULTS = { liveIntervalMs: 2000, cacheMs: 10_000, maxBulk: 10_000 };

/** A numeric option (its default when absent), or a ConfigError naming its range. */
function numberOption(
  options: DashboardOptions,
  key: keyof typeof DEFAULTS,
  min: number,
  max: number,
  integer: boolean,
): number {
  const value: unknown = options[key] ?? DEFAULTS[key];
  if (typeof value !== "number" || !(value >= min && value <= max) || (integer && !Number.isInteger(value))) {
    const kind = integer ? "an integer" : "a number of milliseconds";
    throw new ConfigError(`createDashboard: ${key} must be ${kind} from ${min} to ${max}, got ${describeValue(value)}`);
  }
  return value;
}

/**
 * The web dashboard of a gen-durable schema: machines, queues, instances and their history, with
 * actions (signal, cancel, retry) unless `readOnly`. It reads the database directly; no engine
 * needs to run. Throws a ConfigError on a bad option.
 */
export function createDashboard(options: DashboardOptions): DashboardHandler {
  if (typeof options !== "object" || options === null) throw new ConfigError("createDashboard: options are required");
  const schema = checkSchemaName(options.schema ?? "gen_durable", (m) => new ConfigError(`createDashboard: ${m}`));
  const base = basePathFrom(options.basePath);
  if (options.token !== undefined && (typeof options.token !== "string" || options.token.length < 8))
    throw new ConfigError("createDashboard: token must be a string of at least 8 characters");
  // A live page's timer fires after 1 ms beyond 2^31 - 1 ms, and maxBulk + 1 is a SQL limit: bounded here.
  const liveIntervalMs = numberOption(options, "liveIntervalMs", 100, 86_400_000, false);
  const cacheMs = numberOption(options, "cacheMs", 0, 86_400_000, false);
  const maxBulk = numberOption(options, "maxBulk", 1, 1_000_000, true);
  const { pool, owned } = openPool(options, "createDashboard", "gen-durable-dashboard", 4);
  const engine = new GenDurable({ pool, schema });
  const csrf = randomBytes(24).toString("base64url");
  const ctx = makeContext(pool, schema, engine, base, options.readOnly === true, csrf, cacheMs, options.machines ?? []);
  const live = new LiveHub(ctx, liveIntervalMs);
  const token = options.token;

  const handler = ((req: IncomingMessage, res: ServerResponse) => {
    handle(req, res).catch((error: unknown) => {
      const bad = error instanceof BadRequest || error instanceof ValidationError;
      if (!res.headersSent)
        sendPage(
          res,
          ctx,
          bad
            ? errorPage(400, "Bad request", describe(error))
            : errorPage(500, "The dashboard failed", describe(error)),
        );
      else res.end();
    });
  }) as DashboardHandler;

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://dashboard.invalid");
    // Mounted by a router that strips the base path (Express app.use), or not (a plain server, Fastify's raw request).
    let path = url.pathname;
    if (base && (path === base || path.startsWith(`${base}/`))) path = path.slice(base.length);
    if (path === "") path = "/";
    if (token !== undefined && !authorized(req, url, token, res, base)) {
      res.writeHead(401, {
        "www-authenticate": 'Basic realm="gen-durable dashboard", charset="UTF-8"',
        "content-type": "text/plain; charset=utf-8",
      });
      res.end("gen-durable dashboard: this dashboard needs its token (as the password)\n");
      return;
    }
    if (req.method === "GET" || req.method === "HEAD") return get(req, res, url, path);
    if (req.method === "POST") return post(req, res, url, path);
    res.writeHead(405, { allow: "GET, HEAD, POST", "content-type": "text/plain; charset=utf-8" });
    res.end("method not allowed\n");
  }

  async function get(req: IncomingMessage, res: ServerResponse, url: URL, path: string): Promise<void> {
    if (path === "/assets/app.css") return sendAsset(res, "text/css", STYLESHEET);
    if (path === "/assets/app.js") return sendAsset(res, "text/javascript", CLIENT_SCRIPT);
    if (path === "/live") {
      const page = url.searchParams.get("page") ?? "/";
      if (!page.startsWith("/") || page.startsWith("//")) return sendText(res, 400, "page must be a path\n");
      return live.subscribe(req, res, page);
    }
    const machineExport = /^\/machines\/([^/]+)\.(mmd|svg)$/.exec(path);
    if (machineExport) {
      const machine = decodeURIComponent(machineExport[1]!);
      const window = windowFrom(url);
      const graph = await machineGraph(ctx, machine, window.seconds);
      const step = url.searchParams.get("step") ?? undefined;
      const safeName = machine.replace(/[^\w.-]+/g, "_");
      if (machineExport[2] === "mmd") {
        res.writeHead(200, {
          "content-type": "text/plain; charset=utf-8",
          "content-disposition": `attachment; filename="${safeName}.mmd"`,
        });
        res.end(toMermaid(graph, step));
      } else {
        res.writeHead(200, {
          "content-type": "image/svg+xml; charset=utf-8",
          "content-disposition": `attachment; filename="${safeName}.svg"`,
          "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'",
        });
        res.end(`<?xml version="1.0" encoding="UTF-8"?>\n${toSvg(graph, step)}\n`);
      }
      return;
    }
    const page = await renderRoute(ctx, url, path);
    sendPage(res, ctx, page, `${path}${url.search}`);
  }

  async function post(req: IncomingMessage, res: ServerResponse, url: URL, path: string): Promise<void> {
    if (ctx.readOnly) return sendPage(res, ctx, errorPage(403, "Read-only", "This dashboard is read-only: no action."));
    if (!sameOrigin(req)) return sendPage(res, ctx, errorPage(403, "Refused", "Cross-origin request refused."));
    const form = await readForm(req);
    if (!tokenMatches(form.get("_csrf") ?? "", csrf))
      return sendPage(
        res,
        ctx,
        errorPage(403, "Refused", "The form is stale or forged: reload the page and try again."),
      );
    const queue = /^\/queues\/([^/]+)\/(pause|resume)$/.exec(path);
    if (queue) {
      const name = decodeURIComponent(queue[1]!);
      const back = (params: Record<string, string>) => redirect(res, link(ctx, "/", params));
      try {
        // engine.pauseQueue / resumeQueue: every node stops (or resumes) claiming in the queue at its next claim.
        if (queue[2] === "pause") await engine.pauseQueue(name);
        else await engine.resumeQueue(name);
      } catch (error) {
        if (error instanceof GenDurableError) return back({ error: error.message });
        throw error;
      }
      return back({ ok: `Queue ${name} is ${queue[2] === "pause" ? "paused" : "resumed"}.` });
    }
    const one = /^\/instances\/([1-9][0-9]{0,18})\/(retry|cancel|signal)$/.exec(path);
    if (one) {
      const [, id, action] = one as unknown as [string, string, "retry" | "cancel" | "signal"];
      const back = (params: Record<string, string>) => redirect(res, link(ctx, `/instances/${id}`, params));
      try {
        if (action === "retry") {
          await engine.retry(id);
          return back({ ok: `Instance ${id} is runnable again at its failed step.` });
        }
        if (action === "cancel") {
          const reason = form.get("reason")?.trim();
          await engine.cancel(id, reason ? reason : undefined);
          return back({ ok: `Instance ${id} is cancelled.` });
        }
        const event = form.get("event")?.trim() ?? "";
        const payloadText = form.get("payload")?.trim() ?? "";
        let payload: unknown = null;
        if (payloadText !== "") {
          try {
            payload = JSON.parse(payloadText);
          } catch (error) {
            return back({ error: `The payload is not valid JSON: ${describe(error)}` });
          }
        }
        const sent = await engine.signal({ id }, event, payload);
        return back({
          ok: sent.duplicate ? "Duplicate signal: stored once." : `Signal ${sent.signalId} (${event}) sent.`,
        });
      } catch (error) {
        if (error instanceof GenDurableError) return back({ error: error.message });
        throw error;
      }
    }
    if (path === "/actions/bulk") return bulk(res, url, form);
    sendPage(res, ctx, errorPage(404, "Not found", `No action at ${path}.`));
  }

  /**
   * Retry or cancel many: the ticked ids, or everything matching the list's filter. The first POST
   * answers with a confirmation stating the count; the confirmed one acts, one instance at a time
   * through the engine (each its own transaction, as engine.retry/cancel are).
   */
  async function bulk(res: ServerResponse, _url: URL, form: URLSearchParams): Promise<void> {
    const requested = form.get("action") ?? "";
    const match = /^(retry|cancel)(-all)?$/.exec(requested);
    if (!match) throw new BadRequest(`unknown bulk action ${JSON.stringify(requested)}`);
    const verb = match[1] as "retry" | "cancel";
    const all = match[2] !== undefined;
    const filter = filterFrom(form);
    // Only what the action applies to: retry takes failed instances, cancel live ones.
    const eligible = verb === "retry" ? ["failed"] : ["runnable", "running", "awaiting", "joining"];
    const statuses = (filter.statuses ?? eligible).filter((s) => eligible.includes(s)) as typeof filter.statuses & {};
    const scoped = { ...filter, statuses };
    const backToList = link(ctx, "/instances", filterQuery(filter));
    let ids: string[] = [];
    let count: number;
    if (all) {
      count =
        statuses.length === 0 ? 0 : (await ctx.q.count(ctx.pool, { filter: scoped, limit: maxBulk + 1 })).rows[0]!.n;
    } else {
      ids = form.getAll("id").filter((id) => /^[1-9][0-9]{0,18}$/.test(id));
      count = ids.length;
    }
    const what = all ? `matching ${describeFilter(scoped)}` : "selected";
    if (count === 0)
      return redirect(
        res,
        `${backToList}${backToList.includes("?") ? "&" : "?"}` +
          `error=${encodeURIComponent(`No instance to ${verb}: none ${what}.`)}`,
      );
    if (form.get("confirmed") !== "yes") {
      const capped = count > maxBulk;
      const n = capped ? maxBulk : count;
      const hidden = [...[...form.entries()].filter(([k]) => k !== "_csrf" && k !== "confirmed")].map(
        ([k, v]) => html`<input type="hidden" name="${k}" value="${v}" />`,
      );
      const body = html`<h1>
          ${verb === "retry" ? "Retry" : "Cancel"} ${count > maxBulk ? "at least " : ""}${count}
          instance${count === 1 ? "" : "s"}?
        </h1>
        <p>
          ${verb === "retry" ? "Retry" : "Cancel"} <strong data-count="${n}">${n}</strong> instance${n === 1 ? "" : "s"}
          ${what}${
            capped ? ` (the first ${maxBulk}; run it again for the rest)` : ""
          }.${verb === "cancel" ? " Cancelling is terminal, and cancels their live children too." : ""}
        </p>
        <form method="post" action="${link(ctx, "/actions/bulk")}">
          ${csrfField(ctx)}${hidden}
          <input type="hidden" name="confirmed" value="yes" />
          <button type="submit" class="${verb === "cancel" ? "danger" : "primary"}" id="confirm">
            ${verb === "retry" ? "Retry" : "Cancel"} ${n} instance${n === 1 ? "" : "s"}
          </button>
          <a href="${backToList}">Back</a>
        </form>`;
      return sendPage(res, ctx, { title: "Confirm", section: "instances", body });
    }
    if (all) {
      // Walk the filter newest first in batches, each older than the last id read; each instance is acted on
      // through the engine.
      while (ids.length < maxBulk) {
        const { rows } = await ctx.q.ids(ctx.pool, {
          filter: scoped,
          before: ids.at(-1) ?? null,
          limit: Math.min(500, maxBulk - ids.length),
        });
        if (rows.length === 0) break;
        ids.push(...rows.map((r) => r.id));
      }
    }
    let done = 0;
    const failures: string[] = [];
    for (const id of ids) {
      try {
        if (verb === "retry") await engine.retry(id);
        else await engine.cancel(id, "cancelled from the dashboard");
        done++;
      } catch (error) {
        if (!(error instanceof GenDurableError)) throw error;
        failures.push(`${id}: ${error.message}`);
      }
    }
    const message = `${verb === "retry" ? "Retried" : "Cancelled"} ${done} instance${done === 1 ? "" : "s"}${
      failures.length
        ? `; ${failures.length} refused (${failures.slice(0, 3).join("; ")}${failures.length > 3 ? "; …" : ""})`
        : ""
    }.`;
    redirect(
      res,
      `${backToList}${backToList.includes("?") ? "&" : "?"}` +
        `${failures.length && done === 0 ? "error" : "ok"}=${encodeURIComponent(message)}`,
    );
  }

  Object.defineProperty(handler, "basePath", { value: base });
  handler.close = async () => {
    live.close();
    await engine.stop().catch(() => {});
    if (owned) await pool.end().catch(() => {});
  };
  return handler;
}

/** The page for a GET path, or a 404 page. */
async function renderRoute(ctx: PageContext, url: URL, path: string): Promise<Page> {
  try {
    if (path === "/") return await overviewPage(ctx, url);
    if (path === "/instances") return await instancesPage(ctx, url);
    const instance = /^\/instances\/([1-9][0-9]{0,18})$/.exec(path);
    if (instance) return await instancePage(ctx, url, instance[1]!);
    if (path === "/machines") return await machinesPage(ctx, url);
    const machine = /^\/machines\/([^/]+)$/.exec(path);
    if (machine) return await machinePage(ctx, url, decodeURIComponent(machine[1]!));
    return errorPage(404, "Not found", `Nothing at ${path}.`);
  } catch (error) {
    if (error instanceof BadRequest || error instanceof ValidationError)
      return errorPage(400, "Bad request", error.message);
    throw error;
  }
}

function errorPage(status: number, title: string, message: string): Page {
  return {
    status,
    title,
    section: "overview",
    body: html`<h1>${title}</h1>
      <p class="flash error">${message}</p>`,
  };
}

function layout(ctx: PageContext, page: Page, livePath?: string): string {
  const nav = (section: Page["section"], path: string, label: string) =>
    html`<a href="${link(ctx, path)}" class="${page.section === section ? "active" : ""}">${label}</a>`;
  const liveUrl = livePath && (page.status ?? 200) === 200 ? link(ctx, "/live", { page: livePath }) : "";
  const doc: Safe = html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <title>${page.title} · gen-durable</title>
        <link rel="stylesheet" href="${link(ctx, "/assets/app.css")}" />
      </head>
      <body data-live="${liveUrl}" data-read-only="${ctx.readOnly ? "yes" : "no"}">
        <header>
          <span class="brand">gen-durable</span>
          <nav>
            ${[
              nav("overview", "/", "Overview"),
              nav("instances", "/instances", "Instances"),
              nav("machines", "/machines", "Machines"),
            ]}
          </nav>
          <span class="meta"
            >schema ${ctx.schema}${ctx.readOnly ? raw(' · <span class="badge">read-only</span>') : ""}</span
          >
        </header>
        <main>${page.body}</main>
        <script src="${link(ctx, "/assets/app.js")}" defer></script>
      </body>
    </html>`;
  return doc.text;
}

const SECURITY_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; " +
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "same-origin",
  "x-frame-options": "DENY",
};

function sendPage(res: ServerResponse, ctx: PageContext, page: Page, livePath?: string): void {
  const body = layout(ctx, page, livePath);
  res.writeHead(page.status ?? 200, {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    ...SECURITY_HEADERS,
  });
  res.end(body);
}

function sendAsset(res: ServerResponse, type: string, body: string): void {
  res.writeHead(200, {
    "content-type": `${type}; charset=utf-8`,
    "cache-control": "public, max-age=300",
    "x-content-type-options": "nosniff",
  });
  res.end(body);
}

function sendText(res: ServerResponse, status: number, text: string): void {
  res.writeHead(status, { "content-type": "text/plain; charset=utf-8" });
  res.end(text);
}

function redirect(res: ServerResponse, location: string): void {
  res.writeHead(303, { location, "cache-control": "no-store" });
  res.end();
}

function basePathFrom(value: unknown): string {
  if (value === undefined || value === "" || value === "/") return "";
  if (typeof value !== "string" || !/^\/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$/.test(value) || value.includes("//"))
    throw new ConfigError(`createDashboard: basePath must be a path starting with "/", got ${JSON.stringify(value)}`);
  return value.replace(/\/+$/, "");
}

function tokenMatches(given: string, expected: string): boolean {
  // Compare digests: equal lengths, and no early exit on the first differing byte.
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

/** Whether the request carries the token; `?token=` on a GET sets a cookie so links keep working. */
function authorized(req: IncomingMessage, url: URL, token: string, res: ServerResponse, base: string): boolean {
  const header = req.headers.authorization ?? "";
  if (header.startsWith("Bearer ") && tokenMatches(header.slice(7).trim(), token)) return true;
  if (header.startsWith("Basic ")) {
    const decoded = Buffer.from(header.slice(6).trim(), "base64").toString("utf8");
    const password = decoded.slice(decoded.indexOf(":") + 1);
    if (decoded.includes(":") && tokenMatches(password, token)) return true;
  }
  const cookie = (req.headers.cookie ?? "")
    .split(";")
    .map((c) => c.trim())
    .find((c) => c.startsWith(`${COOKIE}=`));
  if (cookie && tokenMatches(decodeURIComponent(cookie.slice(COOKIE.length + 1)), token)) return true;
  const query = url.searchParams.get("token");
  if (query !== null && req.method === "GET" && tokenMatches(query, token)) {
    res.setHeader(
      "set-cookie",
      `${COOKIE}=${encodeURIComponent(token)}; Path=${base || "/"}; HttpOnly; SameSite=Strict`,
    );
    return true;
  }
  return false;
}

/** Browsers say where a request comes from: a POST from another site is refused even before the CSRF token. */
function sameOrigin(req: IncomingMessage): boolean {
  const site = req.headers["sec-fetch-site"];
  if (site !== undefined && site !== "same-origin" && site !== "none") return false;
  const origin = req.headers.origin;
  if (origin === undefined || origin === "null") return origin === undefined;
  try {
    return new URL(origin).host === req.headers.host;
  } catch {
    return false;
  }
}

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  // Mounted behind a body parser (Express's urlencoded): the body was read already.
  const parsed = (req as { body?: unknown }).body;
  if (parsed && typeof parsed === "object" && !Buffer.isBuffer(parsed)) {
    const form = new URLSearchParams();
    for (const [k, v] of Object.entries(parsed as Record<string, unknown>))
      for (const value of Array.isArray(v) ? v : [v]) form.append(k, String(value));
    return form;
  }
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY) throw new BadRequest("the form is larger than 1 MiB");
    chunks.push(chunk);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Live pages. Each distinct page (path and query) that some tab shows has one
 * timer; every tick renders the page once and sends it to the tabs showing it
 * if it changed.
 */
class LiveHub {
  private readonly topics = new Map<
    string,
    { clients: Set<ServerResponse>; timer: NodeJS.Timeout; last: string; busy: boolean }
  >();

  constructor(
    private readonly ctx: PageContext,
    private readonly intervalMs: number,
  ) {}

  subscribe(req: IncomingMessage, res: ServerResponse, page: string): void {
    res.writeHead(200, {
      "content-type": "text/event-stream; charset=utf-8",
      "cache-control": "no-store",
      connection: "keep-alive",
      "x-accel-buffering": "no",
    });
    res.write(`retry: ${Math.max(1000, this.intervalMs)}\n\n`);
    let topic = this.topics.get(page);
    if (!topic && this.topics.size >= MAX_LIVE_PAGES) {
      // Each distinct page costs a timer and its queries: a bounded number of them.
      res.end(`event: full\ndata: "too many live pages"\n\n`);
      return;
    }
    if (!topic) {
      const created = {
        clients: new Set<ServerResponse>(),
        timer: undefined as unknown as NodeJS.Timeout,
        last: "",
        busy: false,
      };
      created.timer = setInterval(() => void this.tick(page), this.intervalMs);
      created.timer.unref?.();
      this.topics.set(page, created);
      topic = created;
    }
    topic.clients.add(res);
    const leave = () => {
      const t = this.topics.get(page);
      if (!t) return;
      t.clients.delete(res);
      if (t.clients.size === 0) {
        clearInterval(t.timer);
        this.topics.delete(page);
      }
    };
    req.on("close", leave);
    res.on("close", leave);
  }

  private async tick(page: string): Promise<void> {
    const topic = this.topics.get(page);
    // A slow database: skip the tick rather than pile renders up.
    if (!topic || topic.busy) return;
    topic.busy = true;
    try {
      const url = new URL(page, "http://dashboard.invalid");
      const rendered = await renderRoute(this.ctx, url, url.pathname);
      const body = rendered.body.text;
      if (body === topic.last) return;
      topic.last = body;
      const message = `data: ${JSON.stringify(body)}\n\n`;
      for (const client of topic.clients) client.write(message);
    } catch {
      // The database is away: the next tick tries again; the tabs keep what they show.
    } finally {
      topic.busy = false;
    }
  }

  close(): void {
    for (const topic of this.topics.values()) {
      clearInterval(topic.timer);
      for (const client of topic.clients) client.end();
    }
    this.topics.clear();
  }
}
