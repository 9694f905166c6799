/**
 * Trace propagation: the OpenTelemetry context active where an instance is inserted (or a child
 * spawned, or a signal sent) is stored with its row as a W3C trace context, and the spans of the
 * steps it leads to link to it. Through `@opentelemetry/api` only: the registered propagator
 * writes the carrier; without one (an application that registered a tracer provider but no
 * propagator) the W3C `traceparent` is written from the span context directly, since the format
 * is fixed and the engine reads it back itself. Nothing is stored when no valid span is active.
 */
import {
  ROOT_CONTEXT,
  context,
  createTraceState,
  isSpanContextValid,
  propagation,
  trace,
  type Link,
  type SpanContext,
  type TextMapGetter,
} from "@opentelemetry/api";

/** A stored trace context: W3C Trace Context headers. */
export interface TraceCarrier {
  traceparent: string;
  tracestate?: string;
}

/** The active span's context as a carrier, or null when no valid span is active. */
export function captureTraceContext(): TraceCarrier | null {
  const active = context.active();
  const span = trace.getSpanContext(active);
  if (!span || !isSpanContextValid(span)) return null;
  const carrier: Record<string, string> = {};
  propagation.inject(active, carrier);
  if (typeof carrier.traceparent === "string") {
    return {
      traceparent: carrier.traceparent,
      ...(typeof carrier.tracestate === "string" && carrier.tracestate ? { tracestate: carrier.tracestate } : {}),
    };
  }
  const state = span.traceState?.serialize();
  return { traceparent: formatTraceparent(span), ...(state ? { tracestate: state } : {}) };
}

const getter: TextMapGetter<TraceCarrier> = {
  keys: (carrier) => Object.keys(carrier),
  get: (carrier, key) => (key === "traceparent" || key === "tracestate" ? carrier[key] : undefined),
};

/** The span context a stored carrier names, or undefined when it is missing or malformed. */
export function extractSpanContext(carrier: unknown): SpanContext | undefined {
  if (typeof carrier !== "object" || carrier === null) return undefined;
  const { traceparent, tracestate } = carrier as Partial<TraceCarrier>;
  if (typeof traceparent !== "string") return undefined;
  const stored: TraceCarrier = { traceparent, ...(typeof tracestate === "string" ? { tracestate } : {}) };
  const viaPropagator = trace.getSpanContext(propagation.extract(ROOT_CONTEXT, stored, getter));
  if (viaPropagator && isSpanContextValid(viaPropagator)) return viaPropagator;
  return parseTraceparent(stored);
}

/** Links to every valid context among `carriers` (duplicates once), each marked with what it is. */
export function linksTo(carriers: ReadonlyArray<{ carrier: unknown; kind: string }>): Link[] {
  const seen = new Set<string>();
  const links: Link[] = [];
  for (const { carrier, kind } of carriers) {
    const spanContext = extractSpanContext(carrier);
    if (!spanContext) continue;
    const key = `${spanContext.traceId}-${spanContext.spanId}`;
    if (seen.has(key)) continue;
    seen.add(key);
    links.push({ context: spanContext, attributes: { "gen_durable.link": kind } });
  }
  return links;
}

function formatTraceparent(span: SpanContext): string {
  return `00-${span.traceId}-${span.spanId}-${(span.traceFlags & 0xff).toString(16).padStart(2, "0")}`;
}

const TRACEPARENT = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

function parseTraceparent(carrier: TraceCarrier): SpanContext | undefined {
  const match = TRACEPARENT.exec(carrier.traceparent.trim());
  if (!match || match[1] === "ff") return undefined;
  const spanContext: SpanContext = {
    traceId: match[2]!,
    spanId: match[3]!,
    traceFlags: parseInt(match[4]!, 16),
    isRemote: true,
    ...(carrier.tracestate ? { traceState: createTraceState(carrier.tracestate) } : {}),
  };
  return isSpanContextValid(spanContext) ? spanContext : undefined;
}
