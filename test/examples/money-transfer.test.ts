// The money-transfer recipe (examples/money-transfer.ts), run with gen-durable/testing.
import { describe, expect, it } from "vitest";
import { advanceTime, drain } from "../../src/testing/index.js";
import { bankDown, bankSchemaSql, transferMachine } from "../../examples/money-transfer.js";
import { useTestDatabase } from "../support/db.js";

const db = await useTestDatabase(import.meta.url);
const MoneyTransfer = transferMachine(db.schema);
const engine = db.engine({ queues: { default: 4 }, machines: [MoneyTransfer] });
await engine.start();
await db.pool.query(bankSchemaSql(db.schema));
await db.pool.query(`insert into "${db.schema}".accounts values ('alice', 100), ('bob', 0)`);

async function balances(): Promise<Record<string, number>> {
  const { rows } = await db.pool.query<{ id: string; balance: string }>(
    `select id, balance from "${db.schema}".accounts order by id`,
  );
  return Object.fromEntries(rows.map((r) => [r.id, Number(r.balance)]));
}

describe("money transfer saga", () => {
  it("moves the money", async () => {
    const { id } = await engine.insert(MoneyTransfer, { state: { from: "alice", to: "bob", amount: 30 } });
    await drain(engine);
    expect((await engine.get(id))?.result).toEqual({ status: "completed" });
    expect(await balances()).toEqual({ alice: 70, bob: 30 });
  });

  it("refunds at once when the account does not exist (no retries)", async () => {
    const { id } = await engine.insert(MoneyTransfer, { state: { from: "alice", to: "nobody", amount: 20 } });
    expect(await drain(engine)).toMatchObject({ errors: 1, done: 1 });
    expect((await engine.get(id))?.result).toEqual({ status: "refunded", reason: "there is no account nobody" });
    expect(await balances()).toEqual({ alice: 70, bob: 30 });
  });

  it("retries a bank that is down, and completes when it is back", async () => {
    bankDown.deposits = true;
    const { id } = await engine.insert(MoneyTransfer, { state: { from: "alice", to: "bob", amount: 5 } });
    await drain(engine);
    await advanceTime(engine, "2s");
    await drain(engine);
    bankDown.deposits = false;
    await advanceTime(engine, "10s");
    await drain(engine);
    expect((await engine.get(id))?.result).toEqual({ status: "completed" });
    expect(await balances()).toEqual({ alice: 65, bob: 35 });
  });

  it("refunds once the bank has refused every attempt", async () => {
    bankDown.deposits = true;
    const { id } = await engine.insert(MoneyTransfer, { state: { from: "alice", to: "bob", amount: 5 } });
    await drain(engine);
    // Five attempts with backoff from 1 s: advanceTime fires each retry in turn.
    await advanceTime(engine, "10m");
    await drain(engine);
    bankDown.deposits = false;
    expect((await engine.get(id))?.result).toEqual({ status: "refunded", reason: "the bank is not answering" });
    expect((await engine.history(id)).map((t) => t.outcome)).toEqual([
      "next",
      "error",
      "error",
      "error",
      "error",
      "on_failure",
      "done",
    ]);
    expect(await balances()).toEqual({ alice: 65, bob: 35 });
  });

  it("a transfer requested twice with the same key runs once, even after the first finished", async () => {
    // ifExists "reuse": an instance with the key, live or finished within the idempotency window, is
    // the answer; without it a finished transfer would not stop a second one.
    const request = {
      state: { from: "alice", to: "bob", amount: 1 },
      correlationKey: "transfer:42",
      ifExists: "reuse",
    } as const;
    const first = await engine.insert(MoneyTransfer, request);
    await drain(engine);
    const again = await engine.insert(MoneyTransfer, request);
    expect(again).toEqual({ id: first.id, inserted: false });
    await drain(engine);
    expect(await balances()).toEqual({ alice: 64, bob: 36 });
  });
});
