/**
 * The dashboard's pages: each reads what it shows (through the engine's client
 * API where one exists, else the status report or src/sql/dashboard.ts) and
 * renders it with `html`, which escapes every value. Regions marked
 * data-live-region are what the live script swaps when the page changes.
 */
import type pg from "pg";
import type { AnyMachine } from "../define.js";
import type { GenDurable } from "../engine.js";
import type { Instance, Transition } from "../instance.js";
import type { ErrorRecord } from "../json.js";
import { UnknownInstanceError } from "../errors.js";
import { STATUSES, TERMINAL, type Status } from "../status.js";
import { readStatusReport, type QueueStatus } from "../status-report.js";
import { duration, relative } from "../cli/table.js";
import { buildGraph, edgeLabel, formatMs, toSvg, type MachineGraph } from "./graph.js";
import { esc, html, jsonTree, raw, type Safe } from "./html.js";
import {
  dashboardQueries,
  type DashboardQueries,
  type InstanceFilter,
  type MailboxRow,
  type ThroughputRow,
  type TreeRow,
} from "../sql/dashboard.js";

/** What every page needs: the database, the engine client (actions, explain) and how to build links. */
export interface PageContext {
  pool: pg.Pool;
  schema: string;
  engine: GenDurable;
  q: DashboardQueries;
  /** The base path, without a trailing slash ("" at the root). */
  base: string;
  readOnly: boolean;
  /** The per-server token every action form carries. */
  csrf: string;
  cache: TtlCache;
  /** Definitions the dashboard was given: their declared steps join the graphs, their names the machine list. */
  machines: ReadonlyMap<string, AnyMachine>;
}

export interface Page {
  title: string;
  section: "overview" | "instances" | "machines";
  body: Safe;
  status?: number;
}

/** Results that may be a little stale (the hour's chart, a machine's edges): shared by every tab. */
export class TtlCache {
  private readonly entries = new Map<string, { until: number; value: Promise<unknown> }>();
  constructor(private readonly ttlMs: number) {}
  get<T>(key: string, load: () => Promise<T>): Promise<T> {
    const now = Date.now();
    const found = this.entries.get(key);
    if (found && found.until > now) return found.value as Promise<T>;
    const value = load();
    this.entries.set(key, { until: now + this.ttlMs, value });
    value.catch(() => this.entries.delete(key));
    if (this.entries.size > 500) for (const [k, e] of this.entries) if (e.until <= now) this.entries.delete(k);
    return value;
  }
}

export function makeContext(
  pool: pg.Pool,
  schema: string,
  engine: GenDurable,
  base: string,
  readOnly: boolean,
  csrf: string,
  cacheMs: number,
  machines: readonly AnyMachine[] = [],
): PageContext {
  return {
    pool,
    schema,
    engine,
    q: dashboardQueries(schema),
    base,
    readOnly,
    csrf,
    cache: new TtlCache(cacheMs),
    machines: new Map(machines.map((m) => [m.name, m])),
  };
}

// ------------------------------------------------------------------ helpers

const MAX_NODES = 50;
const MAX_BUCKETS = 100;
const PAGE_SIZE = 50;
const MAILBOX_ROWS = 100;
const HISTORY_ROWS = 500;
const TREE_ROWS = 200;
/** The window a machine's graph is drawn from on an instance page. */
const INSTANCE_GRAPH_WINDOW_S = 7 * 24 * 3600;

export const WINDOWS: Record<string, number> = { "1h": 3600, "24h": 86_400, "7d": 604_800, "30d": 2_592_000 };

export const link = (ctx: PageContext, path: string, params?: Record<string, string | undefined>) => {
  const query = params
    ? new URLSearchParams(
        Object.entries(params).filter((e): e is [string, string] => e[1] !== undefined && e[1] !== ""),
      )
    : undefined;
  const search = query?.toString();
  return `${ctx.base}${path}${search ? `?${search}` : ""}`;
};

const statusBadge = (status: string) => html`<span class="badge s-${status}">${status}</span>`;
const when = (date: Date | null | undefined, now: Date) =>
  date ? html`<time datetime="${date.toISOString()}" title="${date.toISOString()}">${relative(date, now)}</time>` : "-";
export const csrfField = (ctx: PageContext) => html`<input type="hidden" name="_csrf" value="${ctx.csrf}" />`;

function flash(url: URL): Safe | "" {
  const ok = url.searchParams.get("ok");
  const error = url.searchParams.get("error");
  if (error) return html`<div class="flash error" role="alert">${error}</div>`;
  if (ok) return html`<div class="flash" role="status">${ok}</div>`;
  return "";
}

function errorBlock(error: ErrorRecord | null | undefined): Safe | "" {
  if (!error) return "";
  return html`<div class="error">
    <strong>${error.name}</strong>:
    ${error.message}${
      error.stack
        ? html`<details>
            <summary>stack trace</summary>
            <pre>${error.stack}</pre>
          </details>`
        : ""
    }${
      error.cause
        ? html`<div class="muted">caused by</div>
            ${errorBlock(error.cause)}`
        : ""
    }
  </div>`;
}

// ------------------------------------------------------------------ overview

export async function overviewPage(ctx: PageContext, url: URL): Promise<Page> {
  const report = await readStatusReport(ctx.pool, ctx.schema, { maxNodes: MAX_NODES });
  const now = report.databaseTime;
  const { rows: buckets } = await ctx.q.buckets(ctx.pool, { limit: MAX_BUCKETS });
  const chart = await ctx.cache.get("throughput", async () => (await ctx.q.throughput(ctx.pool)).rows);
  const filterLink = (queue: string, status?: string) => link(ctx, "/instances", { queue, status });
  const cell = (q: QueueStatus, status: keyof QueueStatus & Status, n: number) =>
    html`<td class="n">${n > 0 ? html`<a href="${filterLink(q.queue, status)}">${n}</a>` : "0"}</td>`;
  const alive = report.nodes.list.filter((n) => n.alive);
  const gone = report.nodes.total - report.nodes.alive;
  const body = html` ${flash(url)}
    <h1>Overview <span class="muted">schema ${ctx.schema}</span></h1>
    <section id="queues" data-live-region>
      <h2>Queues</h2>
      ${
        report.queues.length === 0
          ? html`<p class="muted">No queues: no live or failed instances, and no node serving a queue.</p>`
          : html`<table>
              <thead>
                <tr>
                  <th>Queue</th>
                  <th>Paused</th>
                  <th class="n">Runnable</th>
                  <th class="n">Scheduled</th>
                  <th class="n">Running</th>
                  <th class="n">Awaiting</th>
                  <th class="n">Joining</th>
                  <th class="n">Failed</th>
                  <th class="n">Oldest due</th>
                </tr>
              </thead>
              <tbody>
                ${report.queues.map(
                  (q) =>
                    html`<tr data-queue="${q.queue}">
                      <td><a href="${filterLink(q.queue)}">${q.queue}</a></td>
                      <td>
                        ${q.paused ? html`<span class="badge s-failed">paused</span>` : "no"}
                        ${
                          ctx.readOnly
                            ? ""
                            : html`<form
                                class="inline"
                                method="post"
                                action="${link(
                                  ctx,
                                  `/queues/${encodeURIComponent(q.queue)}/${q.paused ? "resume" : "pause"}`,
                                )}"
                              >
                                ${csrfField(ctx)}<button type="submit" class="small">
                                  ${q.paused ? "Resume" : "Pause"}
                                </button>
                              </form>`
                        }
                      </td>
                      ${cell(q, "runnable", q.runnable)}
                      <td class="n">${q.scheduled}</td>
                      ${cell(q, "running", q.running)}${cell(q, "awaiting", q.awaiting)}${cell(q, "joining", q.joining)}
                      ${cell(q, "failed", q.failed)}
                      <td class="n">${q.oldestDueMs === null ? "-" : duration(q.oldestDueMs)}</td>
                    </tr>`,
                )}
              </tbody>
            </table>`
      }
    </section>
    <section id="throughput" data-live-region>
      <h2>Last hour <span class="muted">transitions per minute; failed attempts in red</span></h2>
      ${throughputChart(chart, now)}
    </section>
    <div class="grid">
      <section id="nodes" data-live-region>
        <h2>
          Nodes
          <span class="muted">${report.nodes.alive} alive${gone > 0 ? `, ${gone} gone` : ""}</span>
        </h2>
        ${
          alive.length === 0
            ? html`<p class="muted">No node alive: nothing runs steps right now.</p>`
            : html`<table>
                <thead>
                  <tr>
                    <th>Node</th>
                    <th>Queues</th>
                    <th>Machines</th>
                    <th>Started</th>
                    <th>Heartbeat</th>
                  </tr>
                </thead>
                <tbody>
                  ${alive.map(
                    (n) =>
                      html`<tr>
                        <td>${n.id}</td>
                        <td>${n.queues.join(", ") || "-"}</td>
                        <td>${n.machines.join(", ") || "-"}</td>
                        <td>${when(n.startedAt, now)}</td>
                        <td>${when(n.heartbeatAt, now)}</td>
                      </tr>`,
                  )}
                </tbody>
              </table>`
        }
      </section>
      <section id="buckets" data-live-region>
        <h2>Rate-limit buckets</h2>
        ${
          buckets.length === 0
            ? html`<p class="muted">No stored bucket (every bucket is full).</p>`
            : html`<table>
                <thead>
                  <tr>
                    <th>Limit</th>
                    <th>Partition</th>
                    <th class="n">Tokens</th>
                    <th>Updated</th>
                    <th>Line until</th>
                    <th>Full at</th>
                  </tr>
                </thead>
                <tbody>
                  ${buckets.map(
                    (b) =>
                      html`<tr>
                        <td>${b.name}</td>
                        <td>${b.partition || "-"}</td>
                        <td class="n">${b.tokens.toFixed(2)}</td>
                        <td>${when(b.updated_at, now)}</td>
                        <td>${b.line_end && b.line_end > now ? when(b.line_end, now) : "-"}</td>
                        <td>${b.full_at > now ? when(b.full_at, now) : "full"}</td>
                      </tr>`,
                  )}
                </tbody>
              </table>`
        }
      </section>
    </div>`;
  return { title: "Overview", section: "overview", body };
}

function throughputChart(rows: readonly ThroughputRow[], now: Date): Safe {
  const byMinute = new Map(rows.map((r) => [Math.floor(r.minute.getTime() / 60_000), r]));
  const last = Math.floor(now.getTime() / 60_000);
  const minutes = Array.from({ length: 60 }, (_, i) => last - 59 + i);
  const max = Math.max(1, ...rows.map((r) => r.n));
  const total = rows.reduce((sum, r) => sum + r.n, 0);
  const failures = rows.reduce((sum, r) => sum + r.failures, 0);
  const W = 720;
  const H = 90;
  const bar = W / 60;
  const bars = minutes.map((m, i) => {
    const r = byMinute.get(m);
    if (!r) return "";
    const h = (r.n / max) * (H - 4);
    const fh = (r.failures / max) * (H - 4);
    return html`<g
      ><title>${new Date(m * 60_000).toISOString().slice(11, 16)}: ${r.n} transitions, ${r.failures} failed</title>
      <rect
        class="ok"
        x="${(i * bar).toFixed(1)}"
        y="${(H - h).toFixed(1)}"
        width="${(bar - 1).toFixed(1)}"
        height="${h.toFixed(1)}"
      />
      ${
        fh > 0
          ? html`<rect
              class="bad"
              x="${(i * bar).toFixed(1)}"
              y="${(H - fh).toFixed(1)}"
              width="${(bar - 1).toFixed(1)}"
              height="${fh.toFixed(1)}"
            />`
          : ""
      }</g
    >`;
  });
  return html`<p class="muted">${total} transitions, ${failures} failed attempts in the last hour (peak ${max}/min)</p>
    <svg
      class="chart"
      width="${W}"
      height="${H}"
      viewBox="0 0 ${W} ${H}"
      role="img"
      aria-label="transitions per minute, last hour"
    >
      <line x1="0" y1="${H - 0.5}" x2="${W}" y2="${H - 0.5}" stroke="#cbd5e1" />
      ${bars}
    </svg>`;
}

// ------------------------------------------------------------------ instance list

/** The instance list's filter as the form gives it. */
export interface ListFilterForm extends InstanceFilter {
  statuses: Status[] | null;
}

/** The filter of the instance list, from a query string or a form: unknown statuses and bad dates are errors. */
export function filterFrom(params: URLSearchParams): ListFilterForm {
  const text = (name: string) => {
    const value = params.get(name)?.trim();
    return value ? value : null;
  };
  const statuses = params
    .getAll("status")
    .flatMap((s) => s.split(","))
    .map((s) => s.trim())
    .filter(Boolean);
  for (const status of statuses)
    if (!(STATUSES as readonly string[]).includes(status))
      throw new BadRequest(`unknown status ${JSON.stringify(status)}; statuses are ${STATUSES.join(", ")}`);
  const date = (name: string) => {
    const value = text(name);
    if (value === null) return null;
    // A browser's datetime-local has no zone: the form says UTC, so it is read as UTC.
    const parsed = new Date(/^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(value) ? `${value}Z` : value);
    if (Number.isNaN(parsed.getTime())) throw new BadRequest(`${name} is not a date: ${JSON.stringify(value)}`);
    return parsed;
  };
  return {
    machine: text("machine"),
    statuses: statuses.length ? (statuses as Status[]) : null,
    queue: text("queue"),
    key: text("key"),
    from: date("from"),
    to: date("to"),
  };
}

export function filterQuery(f: ListFilterForm): Record<string, string | undefined> {
  return {
    machine: f.machine ?? undefined,
    status: f.statuses?.join(",") ?? undefined,
    queue: f.queue ?? undefined,
    key: f.key ?? undefined,
    from: f.from?.toISOString(),
    to: f.to?.toISOString(),
  };
}

export function describeFilter(f: ListFilterForm): string {
  const parts = [
    f.machine && `machine ${f.machine}`,
    f.statuses && `status ${f.statuses.join(" or ")}`,
    f.queue && `queue ${f.queue}`,
    f.key && `correlation key ${f.key}`,
    f.from && `inserted from ${f.from.toISOString()}`,
    f.to && `inserted before ${f.to.toISOString()}`,
  ].filter(Boolean);
  return parts.length ? parts.join(", ") : "all instances";
}

/** A request the dashboard refuses with 400 and this message. */
export class BadRequest extends Error {}

const ID = /^[1-9][0-9]{0,18}$/;

export async function instancesPage(ctx: PageContext, url: URL): Promise<Page> {
  const filter = filterFrom(url.searchParams);
  const after = url.searchParams.get("after");
  if (after !== null && !ID.test(after))
    throw new BadRequest(`after must be an instance id, got ${JSON.stringify(after)}`);
  const { rows } = await ctx.q.list(ctx.pool, { filter, before: after, limit: PAGE_SIZE + 1 });
  const more = rows.length > PAGE_SIZE;
  const instances = rows.slice(0, PAGE_SIZE);
  const now = new Date();
  const query = filterQuery(filter);
  const statusOptions = STATUSES.map(
    (s) => html`<option value="${s}" ${filter.statuses?.includes(s) ? raw("selected") : ""}>${s}</option>`,
  );
  const hidden = Object.entries(query).map(([k, v]) =>
    v ? html`<input type="hidden" name="${k}" value="${v}" />` : "",
  );
  const selectBox = (id: string) =>
    html`<td><input type="checkbox" name="id" value="${id}" aria-label="select ${id}" /></td>`;
  const actions = ctx.readOnly
    ? ""
    : html`<div class="bulk">
        <button type="submit" name="action" value="retry" data-scope="selected">Retry selected</button>
        <button type="submit" name="action" value="cancel" class="danger">Cancel selected</button>
        <button type="submit" name="action" value="retry-all">Retry all matching…</button>
        <button type="submit" name="action" value="cancel-all" class="danger">Cancel all matching…</button>
      </div>`;
  const body = html` ${flash(url)}
    <h1>Instances <span class="muted">${describeFilter(filter)}</span></h1>
    <form class="filters" method="get" action="${link(ctx, "/instances")}">
      <label>machine <input name="machine" value="${filter.machine ?? ""}" /></label>
      <label
        >status
        <select name="status" multiple size="3">
          ${statusOptions}
        </select></label
      >
      <label>queue <input name="queue" value="${filter.queue ?? ""}" /></label>
      <label>correlation key <input name="key" value="${filter.key ?? ""}" /></label>
      <label>inserted from (UTC) <input name="from" type="datetime-local" value="${localInput(filter.from)}" /></label>
      <label>inserted before (UTC) <input name="to" type="datetime-local" value="${localInput(filter.to)}" /></label>
      <button type="submit" class="primary">Filter</button> <a href="${link(ctx, "/instances")}">clear</a>
    </form>
    ${raw(
      ctx.readOnly ? `<div id="bulk">` : `<form method="post" action="${esc(link(ctx, "/actions/bulk"))}" id="bulk">`,
    )}
    ${ctx.readOnly ? "" : html`${csrfField(ctx)}${hidden}`} ${actions}
    <div id="instance-list" data-live-region>
      ${
        instances.length === 0
          ? html`<p class="muted">No instance matches.</p>`
          : html`<table>
              <thead>
                <tr>
                  ${
                    ctx.readOnly ? "" : html`<th><input type="checkbox" data-select-all aria-label="select all" /></th>`
                  }
                  <th class="n">Id</th>
                  <th>Machine</th>
                  <th>Status</th>
                  <th>Step</th>
                  <th>Queue</th>
                  <th class="n">Attempt</th>
                  <th>Correlation key</th>
                  <th>Run at</th>
                  <th>Updated</th>
                </tr>
              </thead>
              <tbody>
                ${instances.map(
                  (i) =>
                    html`<tr data-id="${i.id}">
                      ${ctx.readOnly ? "" : selectBox(i.id)}
                      <td class="n"><a href="${link(ctx, `/instances/${i.id}`)}">${i.id}</a></td>
                      <td><a href="${link(ctx, `/machines/${encodeURIComponent(i.machine)}`)}">${i.machine}</a></td>
                      <td>${statusBadge(i.status)}</td>
                      <td>${i.step}</td>
                      <td>${i.queue}</td>
                      <td class="n">${i.attempt}</td>
                      <td>${i.correlation_key ?? "-"}</td>
                      <td>${when(i.run_at, now)}</td>
                      <td>${when(i.updated_at, now)}</td>
                    </tr>`,
                )}
              </tbody>
            </table>`
      }
    </div>
    ${raw(ctx.readOnly ? "</div>" : "</form>")}
    <div class="pager">
      ${
        more
          ? html`<a
              rel="next"
              href="${link(ctx, "/instances", { ...query, after: instances[instances.length - 1]!.id })}"
              >Older →</a
            >`
          : html`<span class="muted">end of list</span>`
      }${after ? html` · <a href="${link(ctx, "/instances", query)}">newest</a>` : ""}
    </div>`;
  return { title: "Instances", section: "instances", body };
}

function localInput(date: Date | null): string {
  return date ? date.toISOString().slice(0, 16) : "";
}

// ------------------------------------------------------------------ one instance

export async function instancePage(ctx: PageContext, url: URL, id: string): Promise<Page> {
  const instance = await ctx.engine.get(id);
  if (!instance)
    return {
      title: `Instance ${id}`,
      section: "instances",
      status: 404,
      body: html`<h1>Instance ${id}</h1>
        <p>No instance ${id} (never inserted, or pruned).</p>`,
    };
  const [history, explanation, mailbox, inbox, tree, graph] = await Promise.all([
    ctx.engine.history(id),
    ctx.engine.explain(id).catch((error: unknown) => {
      if (error instanceof UnknownInstanceError) return null;
      throw error;
    }),
    ctx.q.mailbox(ctx.pool, { id, limit: MAILBOX_ROWS }),
    // Signals kept for the key (ifMissing: "keep") wait for the next instance inserted with it.
    instance.correlationKey === null
      ? { rows: [] }
      : ctx.q.inbox(ctx.pool, { correlationKey: instance.correlationKey, limit: MAILBOX_ROWS }),
    familyTree(ctx, instance),
    machineGraph(ctx, instance.machine, INSTANCE_GRAPH_WINDOW_S, [instance.step]),
  ]);
  const now = new Date();
  const terminal = TERMINAL.has(instance.status);
  const body = html` ${flash(url)}
    <h1>Instance ${instance.id} <span class="muted">${instance.machine}</span></h1>
    <section id="summary" data-live-region>
      <table class="fields">
        <tr>
          <th>Status</th>
          <td data-status="${instance.status}">${statusBadge(instance.status)}</td>
          <th>Step</th>
          <td data-step>${instance.step}</td>
          <th>Attempt</th>
          <td>${instance.attempt}</td>
        </tr>
        <tr>
          <th>Machine</th>
          <td><a href="${link(ctx, `/machines/${encodeURIComponent(instance.machine)}`)}">${instance.machine}</a></td>
          <th>Queue</th>
          <td>${instance.queue}</td>
          <th>Priority</th>
          <td>${instance.priority}</td>
        </tr>
        <tr>
          <th>Correlation key</th>
          <td>${instance.correlationKey ?? "-"}</td>
          <th>Concurrency key</th>
          <td>${instance.concurrencyKey ?? "-"}</td>
          <th>Run at</th>
          <td>${when(instance.runAt, now)}</td>
        </tr>
        <tr>
          <th>Inserted</th>
          <td>${when(instance.insertedAt, now)}</td>
          <th>Updated</th>
          <td>${when(instance.updatedAt, now)}</td>
          <th>Parent</th>
          <td>
            ${
              instance.parentId
                ? html`<a href="${link(ctx, `/instances/${instance.parentId}`)}">${instance.parentId}</a>`
                : "-"
            }
          </td>
        </tr>
      </table>
    </section>
    <div class="grid">
      <section id="why" data-live-region>
        ${
          explanation
            ? html`<h2>Why it is not running</h2>
                <ul class="explain">
                  ${explanation.reasons.map((r) => html`<li>${r}</li>`)}
                </ul>`
            : ""
        }
        ${
          instance.error
            ? html`<h2>Error</h2>
                ${errorBlock(instance.error)}`
            : ""
        }
      </section>
      ${ctx.readOnly ? "" : actionForms(ctx, instance, terminal)}
    </div>
    <section id="graph" data-live-region>
      <h2>
        Machine graph
        <span class="muted">recorded transitions of ${instance.machine}, last 7 days; current step highlighted</span>
      </h2>
      <div class="graph-box">${raw(toSvg(graph, instance.step))}</div>
    </section>
    <div class="grid">
      <section id="state" data-live-region>
        <h2>State</h2>
        ${jsonTree(instance.state)}
        ${
          instance.result !== null && instance.result !== undefined
            ? html`<h2>Result</h2>
                ${jsonTree(instance.result)}`
            : ""
        }
      </section>
      <section id="family" data-live-region>
        <h2>Parent and children</h2>
        ${tree}
      </section>
    </div>
    <div class="grid">
      <section id="history" data-live-region>
        <h2>History <span class="muted">${history.length} transition${history.length === 1 ? "" : "s"}</span></h2>
        ${timeline(history, instance, now)}
      </section>
      <section id="mailbox" data-live-region>
        <h2>Mailbox</h2>
        ${mailboxTable(mailbox.rows, now)}
        ${
          inbox.rows.length > 0
            ? html`<h2>Kept for correlation key ${instance.correlationKey}</h2>
                <p class="muted">
                  Sent with ifMissing: "keep" while no instance with the key was live; the next one inserted with it
                  receives them.
                </p>
                ${mailboxTable(
                  inbox.rows.map((r) => ({ ...r, consumed_at: null })),
                  now,
                )}`
            : ""
        }
      </section>
    </div>`;
  return { title: `Instance ${instance.id}`, section: "instances", body };
}

function actionForms(ctx: PageContext, instance: Instance, terminal: boolean): Safe {
  const action = (name: string) => link(ctx, `/instances/${instance.id}/${name}`);
  return html`<section id="actions">
    <h2>Actions</h2>
    <div class="actions">
      ${
        terminal
          ? ""
          : html`<form method="post" action="${action("signal")}" id="signal-form">
              ${csrfField(ctx)}
              <strong>Signal</strong>
              <label
                >event
                <input name="event" required placeholder="${instance.status === "awaiting" ? "event name" : "event"}"
              /></label>
              <label>payload (JSON) <textarea name="payload" rows="3" cols="36" placeholder="null"></textarea></label>
              <button type="submit" class="primary">Send signal</button>
            </form>`
      }
      ${
        terminal
          ? ""
          : html`<form method="post" action="${action("cancel")}" id="cancel-form">
              ${csrfField(ctx)} <strong>Cancel</strong
              ><label>reason <input name="reason" placeholder="cancelled" /></label>
              <button type="submit" class="danger">Cancel instance</button>
            </form>`
      }
      ${
        instance.status === "failed"
          ? html`<form method="post" action="${action("retry")}" id="retry-form">
              ${csrfField(ctx)} <strong>Retry</strong
              ><span class="muted">runs step ${instance.step} again with fresh attempts</span>
              <button type="submit" class="primary">Retry</button>
            </form>`
          : ""
      }
      ${
        terminal && instance.status !== "failed"
          ? html`<p class="muted">No action: the instance is ${instance.status}.</p>`
          : ""
      }
    </div>
  </section>`;
}

function timeline(history: Transition[], instance: Instance, now: Date): Safe {
  if (history.length === 0) return html`<p class="muted">No transition yet.</p>`;
  const shown = history.length > HISTORY_ROWS ? history.slice(-HISTORY_ROWS) : history;
  return html`${history.length > shown.length ? html`<p class="muted">the last ${shown.length} shown</p>` : ""}
    <ol class="timeline">
      ${shown.map((t, i) => {
        const next = shown[i + 1];
        // How long the instance stayed after this transition: until the next one, or until now if live.
        const stayed = next
          ? next.at.getTime() - t.at.getTime()
          : TERMINAL.has(instance.status)
            ? null
            : now.getTime() - t.at.getTime();
        return html`<li class="o-${t.outcome}">
          <strong>${t.outcome}</strong> ${t.fromStep ?? "∅"} → ${t.toStep ?? "∅"}
          <span class="muted"
            >attempt
            ${t.attempt}${t.durationMs !== null ? `, ran ${formatMs(t.durationMs)}` : ""}${
              stayed !== null ? `, then ${duration(Math.max(0, stayed))} until ${next ? "the next" : "now"}` : ""
            }
            · <time datetime="${t.at.toISOString()}">${t.at.toISOString()}</time></span
          >
          ${t.error ? errorBlock(t.error) : ""}
        </li>`;
      })}
    </ol>`;
}

function mailboxTable(rows: readonly MailboxRow[], now: Date): Safe {
  if (rows.length === 0) return html`<p class="muted">No signal.</p>`;
  return html`<table>
    <thead>
      <tr>
        <th class="n">Id</th>
        <th>Event</th>
        <th>Payload</th>
        <th>Dedup key</th>
        <th>Sent</th>
        <th>Consumed</th>
      </tr>
    </thead>
    <tbody>
      ${rows.map(
        (s) =>
          html`<tr class="${s.consumed_at ? "consumed" : "pending"}">
            <td class="n">${s.id}</td>
            <td>${s.event}</td>
            <td>${jsonTree(s.payload, 0)}</td>
            <td>${s.dedup_key ?? "-"}</td>
            <td>${when(s.inserted_at, now)}</td>
            <td>${s.consumed_at ? when(s.consumed_at, now) : html`<span class="badge s-awaiting">pending</span>`}</td>
          </tr>`,
      )}
    </tbody>
  </table>`;
}

/** The instance's ancestors up to the root, and the root's descendants three levels down (bounded). */
async function familyTree(ctx: PageContext, instance: Instance): Promise<Safe> {
  const self: TreeRow = {
    id: instance.id,
    machine: instance.machine,
    status: instance.status,
    step: instance.step,
    parent_id: instance.parentId,
  };
  let root = self;
  for (let depth = 0; root.parent_id !== null && depth < 20; depth++) {
    const { rows } = await ctx.q.parentOf(ctx.pool, { id: root.parent_id });
    if (!rows[0]) break;
    root = rows[0];
  }
  const children = new Map<string, TreeRow[]>();
  let level = [root.id];
  let budget = TREE_ROWS;
  for (let depth = 0; depth < 4 && level.length > 0 && budget > 0; depth++) {
    const { rows } = await ctx.q.children(ctx.pool, { parents: level, limit: budget });
    budget -= rows.length;
    for (const row of rows) children.set(row.parent_id!, [...(children.get(row.parent_id!) ?? []), row]);
    level = rows.map((r) => r.id);
  }
  if (root === self && !children.has(self.id)) return html`<p class="muted">No parent, no children.</p>`;
  const render = (row: TreeRow): Safe =>
    html`<li>
      <span class="${row.id === instance.id ? "self" : ""}"
        ><a href="${link(ctx, `/instances/${row.id}`)}">${row.id}</a> ${row.machine} · ${row.step}
        ${statusBadge(row.status)}</span
      >${
        children.has(row.id)
          ? html`<ul>
              ${children.get(row.id)!.map(render)}
            </ul>`
          : ""
      }
    </li>`;
  return html`<div class="tree">
    <ul>
      ${render(root)}
    </ul>
    ${budget <= 0 ? html`<p class="muted">(first ${TREE_ROWS} shown)</p>` : ""}
  </div>`;
}

// ------------------------------------------------------------------ machines

export async function machineGraph(
  ctx: PageContext,
  machine: string,
  windowS: number,
  extraSteps: string[] = [],
): Promise<MachineGraph> {
  const rows = await ctx.cache.get(
    `edges:${machine}:${windowS}`,
    async () => (await ctx.q.edges(ctx.pool, { machine, windowS })).rows,
  );
  const definition = ctx.machines.get(machine);
  const declared = definition ? [...definition.steps.keys()] : [];
  return buildGraph(machine, rows, [...declared, ...extraSteps], definition?.initial);
}

export async function machinesPage(ctx: PageContext, url: URL): Promise<Page> {
  const { rows: stored } = await ctx.q.machines(ctx.pool, { limit: 500 });
  const names = new Set([...stored.map((r) => r.machine), ...ctx.machines.keys()]);
  const rows = [...names].sort().map((machine) => ({ machine }));
  const body = html`${flash(url)}
    <h1>Machines</h1>
    ${
      rows.length === 0
        ? html`<p class="muted">No instance yet, and no machine definition given.</p>`
        : html`<ul>
            ${rows.map(
              (r) =>
                html`<li>
                  <a href="${link(ctx, `/machines/${encodeURIComponent(r.machine)}`)}">${r.machine}</a> ·
                  <a href="${link(ctx, "/instances", { machine: r.machine })}">instances</a>
                </li>`,
            )}
          </ul>`
    }`;
  return { title: "Machines", section: "machines", body };
}

export function windowFrom(url: URL): { name: string; seconds: number } {
  const name = url.searchParams.get("window") ?? "24h";
  const seconds = WINDOWS[name];
  if (seconds === undefined)
    throw new BadRequest(`window must be one of ${Object.keys(WINDOWS).join(", ")}, got ${JSON.stringify(name)}`);
  return { name, seconds };
}

export async function machinePage(ctx: PageContext, url: URL, machine: string): Promise<Page> {
  const window = windowFrom(url);
  const [graph, live] = await Promise.all([
    machineGraph(ctx, machine, window.seconds),
    ctx.cache.get(`live:${machine}`, async () => (await ctx.q.liveSteps(ctx.pool, { machine })).rows),
  ]);
  const focus = url.searchParams.get("step") ?? undefined;
  const exportLink = (ext: string) =>
    link(ctx, `/machines/${encodeURIComponent(machine)}.${ext}`, { window: window.name, step: focus });
  const body = html`${flash(url)}
    <h1>Machine ${machine}</h1>
    <p>
      Window:
      ${Object.keys(WINDOWS).map((w) =>
        w === window.name
          ? html`<strong>${w}</strong> `
          : html`<a href="${link(ctx, `/machines/${encodeURIComponent(machine)}`, { window: w, step: focus })}"
              >${w}</a
            > `,
      )}
      · export <a href="${exportLink("mmd")}" download>Mermaid</a> · <a href="${exportLink("svg")}" download>SVG</a> ·
      <a href="${link(ctx, "/instances", { machine })}">instances</a>
    </p>
    <section id="graph" data-live-region>
      <p class="legend">
        ${ctx.machines.has(machine) ? "Dashed steps are declared but recorded nothing in this window. " : ""}
        <span style="color:#475569">— next</span><span style="color:#2563eb">- - await</span>
        <span style="color:#d97706">- - timeout</span><span style="color:#7c3aed">━ spawn</span>
        <span style="color:#dc2626">— retry (failed attempt)</span><span style="color:#15803d">— done</span>
      </p>
      ${
        graph.edges.length === 0
          ? html`<p class="muted">No transition recorded in this window.</p>`
          : html`<div class="graph-box">${raw(toSvg(graph, focus))}</div>`
      }
      <h2>Edges</h2>
      <table>
        <thead>
          <tr>
            <th>From</th>
            <th>To</th>
            <th>Kind</th>
            <th class="n">Count</th>
            <th class="n">p50</th>
            <th class="n">Failure rate of the step</th>
          </tr>
        </thead>
        <tbody>
          ${graph.edges.map(
            (e) =>
              html`<tr>
                <td>${e.from}</td>
                <td>${e.to.startsWith("\u0000") ? e.kind : e.to}</td>
                <td>${e.kind}</td>
                <td class="n">${e.count}</td>
                <td class="n">${formatMs(e.p50Ms) || "-"}</td>
                <td class="n" title="${edgeLabel(e)}">${(e.failureRate * 100).toFixed(1)}%</td>
              </tr>`,
          )}
        </tbody>
      </table>
      <h2>Live instances by step</h2>
      ${
        live.length === 0
          ? html`<p class="muted">None live.</p>`
          : html`<table>
              <thead>
                <tr>
                  <th>Step</th>
                  <th>Status</th>
                  <th class="n">Instances</th>
                </tr>
              </thead>
              <tbody>
                ${live.map(
                  (r) =>
                    html`<tr>
                      <td>
                        <a
                          href="${link(ctx, `/machines/${encodeURIComponent(machine)}`, {
                            window: window.name,
                            step: r.step,
                          })}"
                          >${r.step}</a
                        >
                      </td>
                      <td>${statusBadge(r.status)}</td>
                      <td class="n"><a href="${link(ctx, "/instances", { machine, status: r.status })}">${r.n}</a></td>
                    </tr>`,
                )}
              </tbody>
            </table>`
      }
    </section>`;
  return { title: `Machine ${machine}`, section: "machines", body };
}
