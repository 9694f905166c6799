// Trace propagation against real Postgres: the OpenTelemetry context active at insert, insertMany,
// signal and ctx.spawn is stored with the row, and the span of each step it leads to links to it
// (in-memory SDK exporter).
import { context, createTraceState, propagation, trace, type Link } from "@opentelemetry/api";
import { AsyncLocalStorageContextManager } from "@opentelemetry/context-async-hooks";
import { W3CTraceContextPropagator } from "@opentelemetry/core";
import { BasicTracerProvider, InMemorySpanExporter, SimpleSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineMachine } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const QUEUE = "traces";
const empty = z.object({});

const exporter = new InMemorySpanExporter();
const tracerProvider = new BasicTracerProvider({ spanProcessors: [new SimpleSpanProcessor(exporter)] });
const app = tracerProvider.getTracer("app");
const manager = new AsyncLocalStorageContextManager();

const Order = defineMachine({
  name: "Order",
  queue: QUEUE,
  state: empty,
  steps: {
    start: (ctx) => ctx.await("paid", "ship"),
    ship: (ctx) => ctx.done(),
  },
});
const Child = defineMachine({
  name: "Child",
  queue: QUEUE,
  state: empty,
  steps: { start: (ctx) => ctx.done() },
});
const Parent = defineMachine({
  name: "Parent",
  queue: QUEUE,
  state: empty,
  steps: {
    start: (ctx) => ctx.spawn([{ machine: Child, state: {} }], "join"),
    join: (ctx) => ctx.done(),
  },
});

const engine = db.engine({
  queues: { [QUEUE]: 4 },
  machines: [Order, Child, Parent],
  telemetry: { tracerProvider },
});

beforeAll(async () => {
  context.setGlobalContextManager(manager.enable());
  await engine.start();
});
afterAll(() => {
  context.disable();
  propagation.disable();
});

/** The finished span of `machine.step` for instance `id`. */
function stepSpan(id: string, machine: string, step: string) {
  return eventually(`the span of ${machine}.${step} of ${id}`, () =>
    exporter
      .getFinishedSpans()
      .find((s) => s.attributes["gen_durable.instance.id"] === id && s.name === `gen-durable step ${machine}.${step}`),
  );
}

/** Runs `body` inside a new active span; returns its result and the span's ids. */
async function inSpan<T>(name: string, body: () => Promise<T>) {
  const span = app.startSpan(name);
  try {
    const value = await context.with(trace.setSpan(context.active(), span), body);
    return { value, span: span.spanContext() };
  } finally {
    span.end();
  }
}

const linked = (links: Link[]) =>
  links.map((l) => ({
    traceId: l.context.traceId,
    spanId: l.context.spanId,
    kind: l.attributes?.["gen_durable.link"],
  }));

async function storedContext(table: "instances" | "signals", id: string): Promise<unknown> {
  const { rows } = await db.pool.query(`select trace_context from ${db.schema}.${table} where id = $1`, [id]);
  return rows[0]?.trace_context;
}

describe("trace propagation", () => {
  it("a step links to the span active at insert, and a resumed step to the signal's", async () => {
    const request = await inSpan("POST /orders", () => engine.insert(Order, { state: {} }));
    const { id } = request.value;
    expect(await storedContext("instances", id)).toEqual({
      traceparent: `00-${request.span.traceId}-${request.span.spanId}-01`,
    });
    const start = await stepSpan(id, "Order", "start");
    expect(linked(start.links)).toEqual([{ ...request.span, kind: "inserted" }].map(pick));
    // Each step stays the root of its own trace.
    expect(start.parentSpanContext).toBeUndefined();

    const webhook = await inSpan("POST /webhooks/payment", () => engine.signal({ id }, "paid", { amount: 1 }));
    expect(await storedContext("signals", webhook.value.signalId!)).toMatchObject({
      traceparent: `00-${webhook.span.traceId}-${webhook.span.spanId}-01`,
    });
    await engine.wait(id, { timeout: 20_000 });
    const ship = await stepSpan(id, "Order", "ship");
    expect(linked(ship.links)).toEqual([
      pick({ ...request.span, kind: "inserted" }),
      pick({ ...webhook.span, kind: "signal" }),
    ]);
  });

  it("a kept signal carries its context to the instance inserted later", async () => {
    const key = `order:${Math.random()}`;
    const early = await inSpan("early webhook", () => engine.signal(key, "paid", null, { ifMissing: "keep" }));
    const { id } = await engine.insert(Order, { state: {}, correlationKey: key });
    await engine.wait(id, { timeout: 20_000 });
    const ship = await stepSpan(id, "Order", "ship");
    expect(linked(ship.links)).toEqual([pick({ ...early.span, kind: "signal" })]);
  });

  it("a spawned child's step links to its parent's step", async () => {
    const { id } = await engine.insert(Parent, { state: {} });
    await engine.wait(id, { timeout: 20_000 });
    const parentStart = await stepSpan(id, "Parent", "start");
    expect(parentStart.links).toEqual([]);
    const { rows } = await db.pool.query<{ id: string }>(
      `select id::text as id from ${db.schema}.instances where parent_id = $1`,
      [id],
    );
    const child = await stepSpan(rows[0]!.id, "Child", "start");
    expect(linked(child.links)).toEqual([pick({ ...parentStart.spanContext(), kind: "parent" })]);
  });

  it("stores nothing and links nothing when no span is active", async () => {
    const { id } = await engine.insert(Order, { state: {} });
    const sent = await engine.signal({ id }, "paid");
    expect(await storedContext("instances", id)).toBeNull();
    expect(await storedContext("signals", sent.signalId!)).toBeNull();
    await engine.wait(id, { timeout: 20_000 });
    expect((await stepSpan(id, "Order", "start")).links).toEqual([]);
    expect((await stepSpan(id, "Order", "ship")).links).toEqual([]);
  });

  it("goes through the registered propagator: insertMany keeps tracestate", async () => {
    propagation.setGlobalPropagator(new W3CTraceContextPropagator());
    try {
      const span = app.startSpan("batch");
      const withState = trace.setSpanContext(context.active(), {
        ...span.spanContext(),
        traceState: createTraceState("vendor=v1"),
      });
      const [a, b] = await context.with(withState, () =>
        engine.insertMany([
          { machine: Child, state: {} },
          { machine: Child, state: {} },
        ]),
      );
      span.end();
      const expected = {
        traceparent: `00-${span.spanContext().traceId}-${span.spanContext().spanId}-01`,
        tracestate: "vendor=v1",
      };
      expect(await storedContext("instances", a!.id)).toEqual(expected);
      expect(await storedContext("instances", b!.id)).toEqual(expected);
      await engine.wait(a!.id, { timeout: 20_000 });
      const step = await stepSpan(a!.id, "Child", "start");
      expect(step.links[0]?.context.traceState?.get("vendor")).toBe("v1");
    } finally {
      propagation.disable();
    }
  });
});

function pick(s: { traceId: string; spanId: string; kind: string }) {
  return { traceId: s.traceId, spanId: s.spanId, kind: s.kind };
}
