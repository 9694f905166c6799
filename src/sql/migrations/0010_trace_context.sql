-- gen-durable schema, version 10: trace propagation.
--
-- Trace propagation: the W3C trace context (traceparent, and tracestate when set) that was active
-- where an instance was inserted (an HTTP request, a parent's step for a spawned child) or a
-- signal was sent, as a JSON object {"traceparent": ..., "tracestate": ...}. A step's span links
-- to its instance's context and to the contexts of the signals that resumed it. Null when no
-- span was active: nothing is stored then.
alter table {{schema}}.instances add column trace_context jsonb;
alter table {{schema}}.signals add column trace_context jsonb;
