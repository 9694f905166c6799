/**
 * Where a claimed row's new version is written. Every claim changes the status that the partial
 * indexes read, so it is never a HOT update; but when the row's page has room, the new version
 * stays on that page, and its WAL record then holds only what changed. The table's fillfactor
 * (migration 33) keeps that room: rows inserted together and claimed together do not move.
 * A claimed row carries its node's name, so a longer name needs more room: the engine here is
 * named with 80 characters (a default name is the host's name, the pid and six hex digits).
 */
import { afterAll, describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob } from "../../src/index.js";
import { eventually, useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const ROWS = 60;
const LONG_NODE_ID = `node-${"x".repeat(75)}`;

let release: () => void = () => {};
const gate = new Promise<void>((resolve) => (release = resolve));
afterAll(() => release());

const Held = defineJob({
  name: "HeldOnItsPage",
  queue: "pages",
  args: z.object({ i: z.number() }),
  perform: async () => {
    await gate;
    return null;
  },
});

/** Each row's heap page (the block of its ctid), by id. */
async function pages(): Promise<Map<string, number>> {
  const { rows } = await db.pool.query<{ id: string; page: number }>(
    `select id::text as id, (ctid::text::point)[0]::int as page from "${db.schema}".instances where machine = $1`,
    [Held.name],
  );
  return new Map(rows.map((r) => [r.id, r.page]));
}

describe("instances pages", () => {
  it("a claimed row's running version is written on the page of its inserted one", async () => {
    const engine = db.engine({ machines: [Held], queues: { pages: ROWS + 4 }, nodeId: LONG_NODE_ID });
    await engine.insertMany(Array.from({ length: ROWS }, (_, i) => ({ machine: Held, args: { i } })));
    const inserted = await pages();
    expect(inserted.size).toBe(ROWS);
    // More than one page: the claim meets pages the inserts filled to their fillfactor.
    expect(new Set(inserted.values()).size).toBeGreaterThan(1);

    await engine.start();
    await eventually("every row claimed", async () => {
      const { rows } = await db.pool.query<{ n: number }>(
        `select count(*)::int as n from "${db.schema}".instances where machine = $1 and status = 'running'`,
        [Held.name],
      );
      return rows[0]!.n === ROWS;
    });
    const claimed = await pages();
    const moved = [...inserted].filter(([id, page]) => claimed.get(id) !== page);
    expect(moved, "rows whose running version went to another page: [id, inserted page]").toEqual([]);
    release();
    await engine.stop();
  });
});
