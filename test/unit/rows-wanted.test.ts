import { describe, expect, it } from "vitest";
import { rowsWanted } from "../../src/loops/scheduler.js";
import { MAX_BATCH } from "../../src/runtime/completer.js";

// A node at concurrency 10 whose claim-ahead buffer is sized at 800 rows (its pace × 50 ms).
const concurrency = 10;
const ahead = 800;
/** Where claiming ahead stops: the buffer's worth and two full group-commit batches committing. */
const commitRoom = ahead + 2 * MAX_BATCH;

describe("rowsWanted: how many rows a scheduler claims", () => {
  it("claims free slots and the buffer's worth while little is committing", () => {
    expect(rowsWanted({ concurrency, ahead, committing: 0, held: 0 })).toBe(810);
    expect(rowsWanted({ concurrency, ahead, committing: 500, held: 300 })).toBe(510);
  });

  it("keeps claiming ahead while the group commit has less than two full batches beyond the buffer's worth", () => {
    // A big batch being written must not stop the claims: the buffer would run dry behind it.
    expect(rowsWanted({ concurrency, ahead, committing: commitRoom - 1, held: 10 })).toBe(800);
  });

  it("then fills free slots only, and claims nothing at `concurrency` more (a slow database)", () => {
    expect(rowsWanted({ concurrency, ahead, committing: commitRoom, held: 4 })).toBe(6);
    expect(rowsWanted({ concurrency, ahead, committing: commitRoom + concurrency - 1, held: 0 })).toBe(10);
    expect(rowsWanted({ concurrency, ahead, committing: commitRoom + concurrency, held: 0 })).toBe(0);
  });

  it("never asks for fewer than nothing", () => {
    expect(rowsWanted({ concurrency, ahead, committing: 0, held: 2_000 })).toBe(0);
  });

  it("sizes the room by the concurrency when that is larger than the buffer (no claim-ahead)", () => {
    expect(rowsWanted({ concurrency: 32, ahead: 0, committing: 32 + 2 * MAX_BATCH - 1, held: 0 })).toBe(32);
    expect(rowsWanted({ concurrency: 32, ahead: 0, committing: 64 + 2 * MAX_BATCH, held: 0 })).toBe(0);
  });
});
