// The group commit writes a second batch beside the one in flight only when a full batch waits
// behind it, and never more than two at once; each step's promise settles with its own batch.
import { describe, expect, it } from "vitest";
import type pg from "pg";
import { Completer, MAX_BATCH } from "../../src/runtime/completer.js";
import type { Completion } from "../../src/runtime/completion.js";
import type { ClaimQueries } from "../../src/sql/claims.js";

/** A statement that records each batch it is given and answers when the test says so. */
function heldStatements() {
  const batches: Array<{ ids: string[]; answer: () => void }> = [];
  const complete = Object.assign(
    (_db: unknown, args: { outcomes: readonly { id: string }[] }) =>
      new Promise<{ rows: Array<{ id: string; parent_id: null }> }>((resolve) => {
        const ids = args.outcomes.map((o) => o.id);
        batches.push({ ids, answer: () => resolve({ rows: ids.map((id) => ({ id, parent_id: null })) }) });
      }),
    { text: "complete" },
  );
  const statements = { complete, completeReleasingKeys: complete, committedBy: complete };
  return {
    batches,
    statements: statements as unknown as Pick<ClaimQueries, "complete" | "completeReleasingKeys" | "committedBy">,
  };
}

const outcome = (n: number) => ({ id: String(n), concurrency_key: null }) as unknown as Completion;
/** Lets the completer's promise callbacks and the setImmediate they may schedule run. */
const turn = async () => {
  for (let i = 0; i < 3; i++) await new Promise((resolve) => setImmediate(resolve));
};

describe("Completer: group commits in flight", () => {
  it("writes a full batch submitted in one turn once, with no empty statement after it", async () => {
    const { batches, statements } = heldStatements();
    const completer = new Completer({} as pg.Pool, statements);
    const submitted = Array.from({ length: MAX_BATCH }, (_, n) => completer.submit(outcome(n)));
    await turn();
    expect(batches.map((b) => b.ids.length)).toEqual([MAX_BATCH]);
    batches[0]!.answer();
    expect((await Promise.all(submitted)).every(Boolean)).toBe(true);
    await completer.whenIdle();
    expect(batches).toHaveLength(1);
  });

  it("writes a full batch waiting behind the one in flight beside it, never more than two at once", async () => {
    const { batches, statements } = heldStatements();
    const completer = new Completer({} as pg.Pool, statements);
    let n = 0;
    const submitted: Promise<boolean>[] = [];
    const submit = (count: number) => {
      for (let i = 0; i < count; i++) submitted.push(completer.submit(outcome(n++)));
    };

    submit(1);
    await turn();
    expect(batches.map((b) => b.ids.length)).toEqual([1]);

    // Less than a full batch waits for the one in flight.
    submit(MAX_BATCH - 1);
    await turn();
    expect(batches).toHaveLength(1);

    // A full one is written at once, beside it.
    submit(1);
    await turn();
    expect(batches.map((b) => b.ids.length)).toEqual([1, MAX_BATCH]);

    // Two in flight: another full batch waits for one of them.
    submit(MAX_BATCH + 7);
    await turn();
    expect(batches).toHaveLength(2);
    batches[0]!.answer();
    await turn();
    expect(batches.map((b) => b.ids.length)).toEqual([1, MAX_BATCH, MAX_BATCH]);

    // The rest goes when both are written; whenIdle waits for every batch.
    let idle = false;
    void completer.whenIdle().then(() => (idle = true));
    batches[1]!.answer();
    await turn();
    expect(batches).toHaveLength(3);
    batches[2]!.answer();
    await turn();
    expect(batches.map((b) => b.ids.length)).toEqual([1, MAX_BATCH, MAX_BATCH, 7]);
    expect(idle).toBe(false);
    batches[3]!.answer();
    expect(await Promise.all(submitted)).toEqual(Array.from({ length: n }, () => true));
    await turn();
    expect(idle).toBe(true);
    // Every outcome was written once, in the order submitted.
    expect(batches.flatMap((b) => b.ids)).toEqual(Array.from({ length: n }, (_, i) => String(i)));
  });
});
