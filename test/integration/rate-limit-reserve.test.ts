/**
 * Tokens drawn ahead: a node whose steps come many to a statement, from a bucket far from short,
 * draws a few times their tokens in the same statement and hands them to its next steps without
 * one, for a moment; the steps those tokens served count toward the next statement's. Driven
 * through the engine's RateLimiter on a pool whose statements are counted, with a clock of the
 * test's own, against the bucket's row: what the database let through is what counts.
 */
import pg from "pg";
import { afterAll, describe, expect, it } from "vitest";
import { resolveRateLimits, RateLimiter } from "../../src/runtime/rate-limits.js";
import { flowQueries } from "../../src/sql/flow.js";
import { useTestDatabase } from "../support/db.js";
import { recordStatements } from "../support/statements.js";

const db = await useTestDatabase(import.meta.url);
const pool = new pg.Pool({ connectionString: db.url, max: 2 });
afterAll(() => pool.end());
const { texts } = recordStatements(pool);
const statements = () => texts.filter((t) => t.includes("take_tokens(")).length;

/** Refilled so slowly (100 or 1 an hour) that the tokens a test sees gone from a bucket are the ones drawn. */
const limits = resolveRateLimits(
  {
    plenty: { limit: 100, period: "1h", burst: 1_000_000 },
    tight: { limit: 1, period: "1h", burst: 50 },
  },
  (m) => new Error(m),
);
const context = () => Promise.reject(new Error("no partition or weight function here"));

/** The limiters' clock: it moves only when a test moves it. */
let clock = 0;
const newLimiter = () => new RateLimiter(pool, flowQueries(db.schema), limits, () => clock);

/** `n` steps asking for one token each in the same event-loop turn; resolves with their waits (0: run now). */
function steps(limiter: RateLimiter, name: string, n: number, waited = false): Promise<number[]> {
  return Promise.all(Array.from({ length: n }, () => limiter.drawForStep({ name }, context, waited, "test")));
}

/** A limiter whose second statement of "plenty" drew 4 × `n` ahead (its first draws for its own steps only). */
async function withReserve(n: number): Promise<RateLimiter> {
  const limiter = newLimiter();
  await steps(limiter, "plenty", n);
  await steps(limiter, "plenty", n);
  return limiter;
}

/** Tokens gone from the bucket (its refill over a test is under a token). */
async function drawn(name: string): Promise<number> {
  const { rows } = await db.pool.query<{ tokens: number }>(
    `select tokens from ${db.schema}.rate_limit_buckets where name = $1 and partition = ''`,
    [name],
  );
  return Math.round(limits.get(name)!.burst - rows[0]!.tokens);
}

describe("tokens drawn ahead", () => {
  it("a bucket far from short: the next steps take tokens drawn ahead, without a statement", async () => {
    const limiter = newLimiter();
    const before = statements();
    // The first statement of a bucket knows nothing of it yet: it draws for its own steps only.
    expect(await steps(limiter, "plenty", 20)).toEqual(Array(20).fill(0));
    expect(statements() - before).toBe(1);
    expect(await drawn("plenty")).toBe(20);
    // The second also draws 4 × 20 ahead.
    expect(await steps(limiter, "plenty", 20)).toEqual(Array(20).fill(0));
    expect(statements() - before).toBe(2);
    expect(await drawn("plenty")).toBe(120);
    // Those 80 go to the next steps, with no statement; the 81st asks the database again.
    expect(await steps(limiter, "plenty", 80)).toEqual(Array(80).fill(0));
    expect(statements() - before).toBe(2);
    expect(await drawn("plenty")).toBe(120);
    // Alone in its statement, it still counts the 80 steps the reserve served: 4 × 81 drawn ahead.
    expect(await steps(limiter, "plenty", 1)).toEqual([0]);
    expect(statements() - before).toBe(3);
    expect(await drawn("plenty")).toBe(121 + 324);
    // The next 324 steps take those; the one after draws for the 325 since the last statement.
    expect(await steps(limiter, "plenty", 324)).toEqual(Array(324).fill(0));
    expect(statements() - before).toBe(3);
    expect(await steps(limiter, "plenty", 1)).toEqual([0]);
    expect(statements() - before).toBe(4);
    expect(await drawn("plenty")).toBe(446 + 4 * 325);
  });

  it("tokens drawn ahead are dropped, spent, once their moment has passed", async () => {
    const limiter = await withReserve(10); // 40 ahead
    const before = statements();
    const gone = await drawn("plenty");
    // Past the 50 ms they may be used for.
    clock += 50;
    await steps(limiter, "plenty", 1);
    expect(statements() - before).toBe(1);
    expect(await drawn("plenty")).toBe(gone + 1);
  });

  it("a bucket near its limit, or steps a few at a time, are drawn step by step", async () => {
    const limiter = newLimiter();
    // 50 tokens at most: a hundredth of what is free is under one token, nothing is drawn ahead.
    await steps(limiter, "tight", 10);
    await steps(limiter, "tight", 10);
    expect(await drawn("tight")).toBe(20);
    // Far from short, but a few steps to a statement.
    const other = newLimiter();
    const gone = await drawn("plenty");
    for (let i = 0; i < 5; i++) await steps(other, "plenty", 3);
    expect(await drawn("plenty")).toBe(gone + 15);
  });

  it("a waiter at its turn and consume() never take tokens drawn ahead", async () => {
    const limiter = await withReserve(10); // 40 ahead
    const before = statements();
    // A waiter's tokens are set aside in the bucket (its line); consume() reports the bucket itself.
    await steps(limiter, "plenty", 1, true);
    expect((await limiter.consume("plenty")).ok).toBe(true);
    expect(statements() - before).toBe(2);
  });
});

describe("draws asked for while a statement is in flight", () => {
  it("take the tokens its reply drew ahead, without a statement of their own", async () => {
    const limiter = await withReserve(20); // 80 ahead
    const before = statements();
    const gone = await drawn("plenty");
    // 80 take the tokens drawn ahead; the other 20 go to a statement, which counts the 80 served.
    const first = steps(limiter, "plenty", 100);
    await new Promise((resolve) => setImmediate(resolve)); // that statement is on its way
    // Asked for while it is in flight: nothing is left ahead, so they wait for its reply…
    const second = steps(limiter, "plenty", 30);
    expect(await first).toEqual(Array(100).fill(0));
    // …and take what it drew ahead (4 × 100), not a statement of their own.
    expect(await second).toEqual(Array(30).fill(0));
    expect(statements() - before).toBe(1);
    expect(await drawn("plenty")).toBe(gone + 20 + 400);
    // The 370 left serve the next steps, still without a statement.
    expect(await steps(limiter, "plenty", 370)).toEqual(Array(370).fill(0));
    expect(statements() - before).toBe(1);
  });

  it("a statement for a few steps adds its tokens drawn ahead to those left, never replaces them", async () => {
    const limiter = await withReserve(20); // 80 ahead
    const first = steps(limiter, "plenty", 100); // 80 served, 20 in a statement drawing 400 ahead
    await new Promise((resolve) => setImmediate(resolve));
    // A waiter at its turn never takes tokens drawn ahead: it needs a statement after this one,
    // which draws 4 × the 10 steps served meanwhile (40) ahead.
    const second = Promise.all([steps(limiter, "plenty", 10), steps(limiter, "plenty", 1, true)]);
    await first;
    await second;
    const before = statements();
    const gone = await drawn("plenty");
    // 390 left of the first lot and 40 of the second: 430 steps without a statement.
    expect(await steps(limiter, "plenty", 430)).toEqual(Array(430).fill(0));
    expect(statements() - before).toBe(0);
    expect(await drawn("plenty")).toBe(gone);
    // Each lot is still dropped once its own moment has passed.
    clock += 50;
    await steps(limiter, "plenty", 1);
    expect(statements() - before).toBe(1);
  });
});
