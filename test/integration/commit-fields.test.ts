// The group commit sends each outcome without the fields complete_outcomes reads the same way when
// they are missing (nulls, false flags, attempt_op "keep", a done's from_step and attempt). What is
// left out must never change what is written: a state or result of `false` or `null` is data, a
// kept state stays, and a transition that is not a done keeps its history row.
import { describe, expect, it } from "vitest";
import { claimQueries } from "../../src/sql/claims.js";
import { useTestDatabase } from "../support/db.js";
import { doneOutcome } from "../support/outcomes.js";

const db = await useTestDatabase(import.meta.url);
const s = `"${db.schema}"`;
const complete = claimQueries(db.schema).complete;

async function running(id: number, state = '{"kept": true}'): Promise<void> {
  await db.pool.query(
    `insert into ${s}.instances (id, machine, step, state, status, queue, claim_token, attempt, lease_expires_at)
     values ($1, 'M', 'start', $2::jsonb, 'running', 'q', 1, 2, now() + interval '1 hour')`,
    [id, state],
  );
}

async function row(id: number) {
  const { rows } = await db.pool.query(
    `select status, step, state, result, attempt, joined from ${s}.instances where id = $1`,
    [id],
  );
  return rows[0];
}

async function history(id: number) {
  const { rows } = await db.pool.query(
    `select from_step, to_step, outcome, attempt from ${s}.transitions where instance_id = $1`,
    [id],
  );
  return rows;
}

describe("the group commit's outcome fields", () => {
  it("stores a state and a result of false or null as JSON, and keeps a state not set", async () => {
    for (const id of [1, 2, 3]) await running(id);
    const { rows } = await complete(db.pool, {
      outcomes: [
        { ...doneOutcome("1"), set_state: true, state: false, result: false },
        { ...doneOutcome("2"), set_state: true, state: null, result: 0 },
        { ...doneOutcome("3"), result: "" },
      ],
    });
    expect(rows.map((r) => r.id).sort()).toEqual(["1", "2", "3"]);
    expect(await row(1)).toMatchObject({ status: "done", state: false, result: false, attempt: 2 });
    expect(await row(2)).toMatchObject({ status: "done", state: null, result: 0 });
    expect(await row(3)).toMatchObject({ status: "done", state: { kept: true }, result: "" });
    // A done's transition stays in its row: no history row, whatever was left out.
    expect(await history(1)).toEqual([]);
  });

  it("writes a next step's transition in full, and its flags as sent", async () => {
    await running(4);
    await running(5);
    await complete(db.pool, {
      outcomes: [
        { ...doneOutcome("4"), status: "runnable", step: "next", outcome: "next", to_step: "next", joined: true },
        {
          ...doneOutcome("5"),
          status: "runnable",
          step: "next",
          outcome: "next",
          to_step: "next",
          attempt_op: "reset",
        },
      ],
    });
    expect(await row(4)).toMatchObject({
      status: "runnable",
      step: "next",
      state: { kept: true },
      attempt: 2,
      joined: true,
    });
    expect(await row(5)).toMatchObject({ status: "runnable", step: "next", attempt: 0, joined: false });
    expect(await history(4)).toEqual([{ from_step: "start", to_step: "next", outcome: "next", attempt: 1 }]);
    expect(await history(5)).toEqual([{ from_step: "start", to_step: "next", outcome: "next", attempt: 1 }]);
  });
});
