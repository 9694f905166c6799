import { describe, expect, it } from "vitest";
import { insertRowsJson, type InsertRow } from "../../src/sql/instances.js";
import { PLAIN_ROW } from "../support/insert-row.js";

const plain = PLAIN_ROW;

/**
 * The rows as the statement reads them: jsonb_to_recordset reads a missing key as null, and a
 * missing shared field (machine, step, queue, priority, version) is taken from `shared`.
 */
function read(rows: readonly InsertRow[]): Array<Record<string, unknown>> {
  const json = insertRowsJson(rows);
  const shared = JSON.parse(json.shared) as Record<string, unknown>;
  return (JSON.parse(json.rows) as Array<Record<string, unknown>>).map((row) =>
    Object.fromEntries(Object.keys(plain).map((k) => [k, k in row ? row[k] : k in shared ? shared[k] : null])),
  );
}
const expected = (row: InsertRow) => ({ ...row, state: JSON.parse(row.state) as unknown });

describe("insertRowsJson (the bulk insert's rows and the fields they share)", () => {
  it("is the rows' JSON, the state as its checked text, null and shared fields left out", () => {
    const full: InsertRow = {
      idx: 7,
      machine: 'Odd "name" \\ é \u2028',
      step: "step\nwith newline",
      state: '{"nested":[1,"two",null,{"x":true}],"s":"\\"q\\""}',
      queue: "q-1",
      priority: -5,
      run_at: "2026-01-02T03:04:05.006Z",
      delay_ms: 1500.5,
      max_attempts: 3,
      correlation_key: 'order "42"',
      concurrency_key: "tenant:\u00e9",
      concurrency_limit: 4,
      parent_id: "9007199254740993",
      trace_context: { traceparent: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", tracestate: "a=b" },
      idempotency_key: "idem\u0001",
      if_exists: "reuse",
      version: 3,
    };
    const rows = [plain, full, { ...plain, idx: 2, state: "null" }];
    expect(read(rows)).toEqual([expected(plain), expected(full), { ...expected(plain), idx: 2, state: null }]);
    // A plain job's row: its idx and state, the rest shared.
    expect(JSON.parse(insertRowsJson([plain, plain]).rows)).toEqual([
      { idx: 0, state: { i: 0 } },
      { idx: 0, state: { i: 0 } },
    ]);
  });

  it("gives each row its own machine, step, queue, priority and version when they differ from the first row's", () => {
    const rows: InsertRow[] = [
      plain,
      { ...plain, idx: 1, queue: "other" },
      { ...plain, idx: 2, priority: 9 },
      { ...plain, idx: 3, machine: "Other", step: "start", version: 2 },
      { ...plain, idx: 4 },
    ];
    expect(read(rows)).toEqual(rows.map(expected));
  });

  it("is an empty array for no rows", () => {
    expect(insertRowsJson([])).toEqual({ rows: "[]", shared: "{}" });
  });
});
