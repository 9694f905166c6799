/**
 * Token-bucket rate limits shared by every node. The buckets live in Postgres
 * (table rate_limit_buckets, function take_tokens): one row per limit and
 * partition, refilled lazily by the database clock under its row lock, so all
 * nodes draw from the same tokens without any coordinator.
 *
 * Every run takes its tokens just before it starts (or a moment before: tokens
 * drawn ahead, RESERVE_MS), so no window of time sees more than burst + rate ×
 * its length, however late a node runs. A step that
 * finds its bucket short joins the bucket's line: it is promised the next
 * tokens nobody else is promised and rescheduled for when they exist; new
 * draws take only unpromised tokens, so at its turn its tokens are there. One
 * postponement per run, however long the line (migration 0007 explains the
 * bucket's two balances).
 */
import type pg from "pg";
import type { AnyMachine, StepContext, StepRateLimit } from "../define.js";
import { describe, MAX_DURATION_MS, toMs, type Duration } from "../duration.js";
import { ConfigError, ValidationError } from "../errors.js";
import { checkKey, checkName } from "../names.js";
import type { DrawRow as Draw, FlowQueries, TakeTokensArgs } from "../sql/flow.js";
import { rejectUnknownKeys } from "../suggest.js";

export interface RateLimitOption {
  /** Tokens added per `period`: a whole number from 1 to 2147483647. */
  limit: number;
  /** Longer than 0, at most 100 years; an empty bucket must refill (burst / limit × period) within 100 years too. */
  period: Duration;
  /** Most tokens a bucket holds (what may run at once after a quiet spell), 1 to 2147483647. Default: `limit`. */
  burst?: number;
}

/** Largest limit, burst and weight: tokens are counted as Postgres integers would be. */
export const MAX_TOKENS = 2 ** 31 - 1;

const wholeTokens = (n: unknown): n is number =>
  typeof n === "number" && Number.isInteger(n) && n >= 1 && n <= MAX_TOKENS;

export interface RateLimit {
  name: string;
  limit: number;
  periodMs: number;
  burst: number;
  perSecond: number;
}

export function resolveRateLimits(option: unknown, fail: (m: string) => Error): ReadonlyMap<string, RateLimit> {
  const limits = new Map<string, RateLimit>();
  if (option === undefined) return limits;
  if (typeof option !== "object" || option === null || Array.isArray(option)) {
    throw fail(
      `rateLimits must be an object such as { stripe: { limit: 100, period: "1s" } }, got ${describe(option)}`,
    );
  }
  for (const [name, value] of Object.entries(option)) {
    const where = `rateLimits.${name}`;
    checkName(name, "rateLimits: limit name", fail);
    if (typeof value !== "object" || value === null)
      throw fail(`${where} must be { limit, period, burst? }, got ${describe(value)}`);
    rejectUnknownKeys(value, ["limit", "period", "burst"], `GenDurable: ${where}`, (m) => new ConfigError(m));
    const { limit, period, burst } = value as RateLimitOption;
    if (!wholeTokens(limit))
      throw fail(
        `${where}.limit must be a whole number of tokens per period from 1 to ${MAX_TOKENS}, got ${describe(limit)}`,
      );
    if (period === undefined) throw fail(`${where}.period is required, e.g. "1s" or "1m"`);
    const periodMs = toMs(period, `${where}.period`, fail);
    if (periodMs <= 0) throw fail(`${where}.period must be longer than 0 ms`);
    if (burst !== undefined && !wholeTokens(burst))
      throw fail(`${where}.burst must be a whole number of tokens from 1 to ${MAX_TOKENS}, got ${describe(burst)}`);
    // The database adds waits of up to this long to timestamps: beyond it they leave Postgres' range.
    const refillMs = ((burst ?? limit) / limit) * periodMs;
    if (refillMs > MAX_DURATION_MS) {
      throw fail(`${where}: an empty bucket must refill within 100 years (burst / limit × period), got ${refillMs} ms`);
    }
    limits.set(name, { name, limit, periodMs, burst: burst ?? limit, perSecond: (limit * 1000) / periodMs });
  }
  return limits;
}

/** Every step's `rateLimit.name` must be a limit declared on this engine, and a fixed weight must fit in its bucket. */
export function checkStepRateLimits(
  machines: ReadonlyMap<string, AnyMachine>,
  limits: ReadonlyMap<string, RateLimit>,
  fail: (m: string) => Error,
): void {
  for (const machine of machines.values()) {
    for (const step of machine.steps.values()) {
      const name = step.rateLimit?.name;
      if (name === undefined) continue;
      const limit = limits.get(name);
      if (!limit) {
        const known = [...limits.keys()];
        throw fail(
          `machine "${machine.name}" step "${step.name}" uses rate limit "${name}", which is not in rateLimits ` +
            `(${known.length ? known.join(", ") : "none declared"})`,
        );
      }
      const weight = step.rateLimit!.weight;
      if (typeof weight === "number" && weight > limit.burst) {
        throw fail(
          `machine "${machine.name}" step "${step.name}" draws ${weight} tokens from rate limit "${name}", ` +
            `more than its burst of ${limit.burst}: it could never run`,
        );
      }
    }
  }
}

export interface ConsumeOptions {
  /** The bucket of this partition (say, an account id). Default: the limit's single bucket. */
  partition?: string | number;
  /** Tokens to take. Default 1. */
  weight?: number;
}

export interface ConsumeResult {
  /** Whether the tokens were taken. */
  ok: boolean;
  /** Tokens a next draw could take after this call (none while steps wait in line). */
  remaining: number;
  /** When `ok` is false: how long until the bucket, behind the steps waiting in line, could cover `weight`. */
  retryAfterMs: number;
}

export interface BucketState {
  name: string;
  partition: string | null;
  /** Tokens in the bucket now, those promised to steps waiting in line included. */
  tokens: number;
  capacity: number;
  refillPerSecond: number;
  updatedAt: Date;
  /** Steps waiting in line for this bucket have their turns until then (null or past: nobody waits). */
  lineEnd: Date | null;
}

/**
 * A weight is whole tokens, at most the bucket's burst: a larger one could never be taken (the step would wait
 * forever).
 */
function checkWeight(weight: unknown, what: string, limit: RateLimit): number {
  if (typeof weight !== "number" || !Number.isInteger(weight) || weight < 1 || weight > limit.burst) {
    throw new ValidationError(
      `${what} must be a whole number of tokens from 1 to ${limit.burst} (the limit's burst), got ${describe(weight)}`,
    );
  }
  return weight;
}

function partitionKey(partition: unknown, what: string): string {
  if (partition === undefined) return "";
  if (typeof partition === "number") {
    if (!Number.isFinite(partition)) throw new ValidationError(`${what} must be finite, got ${partition}`);
    return String(partition);
  }
  if (typeof partition !== "string")
    throw new ValidationError(`${what} must be a non-empty string or a number, got ${describe(partition)}`);
  return checkKey(partition, what, (m) => new ValidationError(m));
}

type Line = TakeTokensArgs["lines"][number];
interface PendingDraws {
  key: string;
  limit: RateLimit;
  partition: string;
  weights: number[];
  lines: Line[];
  waiters: Array<{ resolve: (draw: Draw) => void; reject: (error: unknown) => void }>;
}

/**
 * Tokens a node draws ahead for its own next steps, from a bucket that is far from short. The
 * demand a statement sees is its own steps' tokens and those its node's steps took from the
 * bucket's reserve since the previous statement was sent: the bucket's pace here, not only the
 * steps that found the reserve gone. When that demand comes from RESERVE_MIN_DEMAND or more steps,
 * the statement also draws up to RESERVE_FACTOR × its tokens, never more than 1/RESERVE_RICH of
 * what the bucket had free after this node's previous statement, as a draw that never joins the
 * line. The node's next steps of that bucket take those tokens without a statement for RESERVE_MS;
 * what is left then is dropped, spent. Each statement's tokens are a lot of their own, beside those
 * left from before: a statement for a few steps, sent right after one that drew for many, used to
 * replace that larger lot with its own small one. And steps that ask while a statement is in
 * flight first take from what its reply drew ahead. A step's tokens are thus taken at most about
 * RESERVE_MS before it asks, and a bucket near its limit, or one whose steps come a few at a time,
 * is drawn from step by step as before. With a limit that is never short, drawing ahead cut the
 * draw statements about threefold, counting the steps the reserve served cut them two- to fivefold
 * again, and lots that add up fourfold again (bench/README.md, "Figures behind choices in the
 * code").
 */
const RESERVE_MIN_DEMAND = 8;
const RESERVE_FACTOR = 4;
const RESERVE_RICH = 100;
const RESERVE_MS = 50;
/** Buckets whose state below is kept, the most recently drawn from. */
const RESERVE_BUCKETS = 1_000;

/** A draw served from tokens drawn ahead, without a statement (what the bucket holds is not known). */
const FROM_RESERVE: Draw = { taken: true, balance: 0, wait_ms: 0 };

/** Tokens one statement drew ahead, usable until `until` (the limiter's clock). */
interface Lot {
  tokens: number;
  until: number;
}

/**
 * A bucket as this node last saw it: what was free, the lots of tokens it drew ahead (oldest
 * first, each usable for RESERVE_MS from its statement's reply), and the steps (`served`) and
 * tokens (`servedTokens`) those served since the last statement was sent.
 */
interface Ahead {
  free: number;
  lots: Lot[];
  served: number;
  servedTokens: number;
}

export class RateLimiter {
  /**
   * Draws waiting to be sent, per bucket: those asked for in one event-loop turn, and all those
   * asked for while the bucket's previous statement was in flight, go to the database together,
   * one statement and one lock of the bucket's row for all of them (in order). One statement per
   * bucket at a time: a second would only wait for the first's row lock, which is held through
   * its commit, and be one more commit of its own.
   */
  private readonly pending = new Map<string, PendingDraws>();
  /** Buckets with a statement in flight (or about to be sent). */
  private readonly busy = new Set<string>();
  /** Per bucket, least recently drawn from first: its tokens drawn ahead (see RESERVE_MS). */
  private readonly ahead = new Map<string, Ahead>();

  constructor(
    private readonly pool: pg.Pool,
    private readonly queries: FlowQueries,
    private readonly limits: ReadonlyMap<string, RateLimit>,
    /** The clock of RESERVE_MS, in milliseconds: performance.now, or a test's own. */
    private readonly now: () => number = () => performance.now(),
  ) {}

  private limit(name: string): RateLimit {
    const limit = this.limits.get(name);
    if (!limit) {
      const known = [...this.limits.keys()];
      throw new ValidationError(
        `unknown rate limit "${name}" (declared in rateLimits: ${known.length ? known.join(", ") : "none"})`,
      );
    }
    return limit;
  }

  private take(limit: RateLimit, partition: string, weight: number, line: Line): Promise<Draw> {
    const key = `${limit.name}\u0000${partition}`;
    // Only a step's first draw: a waiter at its turn has tokens set aside, and consume() reports the bucket.
    if (line === "join" && this.fromReserve(key, weight)) return Promise.resolve(FROM_RESERVE);
    let batch = this.pending.get(key);
    if (!batch) {
      batch = { key, limit, partition, weights: [], lines: [], waiters: [] };
      this.pending.set(key, batch);
      if (!this.busy.has(key)) {
        this.busy.add(key);
        setImmediate(() => void this.flush(key));
      }
    }
    batch.weights.push(weight);
    batch.lines.push(line);
    const waiters = batch.waiters;
    return new Promise((resolve, reject) => waiters.push({ resolve, reject }));
  }

  /**
   * Sends the bucket's pending draws, then those that came meanwhile, until none is left. Those that
   * came while a statement was in flight first take what its reply drew ahead: a statement of their
   * own would stall them a round trip more, and draw for far fewer steps than the one before it.
   */
  private async flush(key: string): Promise<void> {
    for (let batch = this.pending.get(key); batch; batch = this.pending.get(key)) {
      this.pending.delete(key);
      const rest = this.serveFromReserve(batch);
      if (rest) await this.send(rest);
    }
    this.busy.delete(key);
  }

  /**
   * Hands tokens drawn ahead to the batch's first draws of steps that have not stood in line, in
   * order, as take() would have had they come now; the draws left, or null when none is.
   */
  private serveFromReserve(batch: PendingDraws): PendingDraws | null {
    const { key, weights, lines, waiters } = batch;
    let served = 0;
    while (served < lines.length && lines[served] === "join" && this.fromReserve(key, weights[served]!)) {
      waiters[served]!.resolve(FROM_RESERVE);
      served++;
    }
    if (served === lines.length) return null;
    if (served === 0) return batch;
    return {
      ...batch,
      weights: weights.slice(served),
      lines: lines.slice(served),
      waiters: waiters.slice(served),
    };
  }

  private async send({ key, limit, partition, weights, lines, waiters }: PendingDraws): Promise<void> {
    const ahead = this.drawAhead(key, weights, lines);
    const seen = this.ahead.get(key);
    // The steps the reserve serves from now on count toward the next statement's demand.
    if (seen) seen.served = seen.servedTokens = 0;
    try {
      const { rows } = await this.queries.takeTokens(this.pool, {
        bucket: limit.name,
        partition,
        capacity: limit.burst,
        perSecond: limit.perSecond,
        weights: ahead > 0 ? [...weights, ahead] : weights,
        lines: ahead > 0 ? [...lines, "none"] : lines,
      });
      // A new lot joins those left from before, each used within RESERVE_MS of its own statement:
      // a statement for a few steps never throws away the larger lot the one before it drew.
      const state = this.ahead.get(key);
      const lots = state?.lots ?? [];
      if (ahead > 0 && rows[weights.length]!.taken) lots.push({ tokens: ahead, until: this.now() + RESERVE_MS });
      this.remember(key, {
        free: rows[rows.length - 1]!.balance,
        lots,
        served: state?.served ?? 0,
        servedTokens: state?.servedTokens ?? 0,
      });
      waiters.forEach((waiter, i) => waiter.resolve(rows[i]!));
    } catch (error) {
      for (const waiter of waiters) waiter.reject(error);
    }
  }

  /**
   * Takes `weight` tokens drawn ahead for this bucket from its oldest lot still valid that holds
   * that many; lots past their RESERVE_MS, or emptied, are dropped (what was left is spent).
   */
  private fromReserve(key: string, weight: number): boolean {
    const ahead = this.ahead.get(key);
    if (!ahead) return false;
    const { lots } = ahead;
    const now = this.now();
    // Lots expire in the order they were drawn: the oldest first.
    while (lots.length > 0 && (lots[0]!.until <= now || lots[0]!.tokens === 0)) lots.shift();
    for (const lot of lots) {
      if (lot.tokens < weight) continue;
      lot.tokens -= weight;
      ahead.served++;
      ahead.servedTokens += weight;
      return true;
    }
    return false;
  }

  /** How many tokens this batch's statement draws ahead (see RESERVE_MS): 0 unless the bucket is far from short. */
  private drawAhead(key: string, weights: readonly number[], lines: readonly Line[]): number {
    const seen = this.ahead.get(key);
    let demand = seen?.servedTokens ?? 0;
    let draws = seen?.served ?? 0;
    for (let i = 0; i < lines.length; i++) {
      if (lines[i] !== "join") continue;
      demand += weights[i]!;
      draws++;
    }
    if (draws < RESERVE_MIN_DEMAND) return 0;
    return Math.floor(Math.min(RESERVE_FACTOR * demand, (seen?.free ?? 0) / RESERVE_RICH));
  }

  /** Keeps `state` as the bucket's latest, dropping the least recently drawn from beyond RESERVE_BUCKETS. */
  private remember(key: string, state: Ahead): void {
    this.ahead.delete(key);
    this.ahead.set(key, state);
    if (this.ahead.size > RESERVE_BUCKETS) this.ahead.delete(this.ahead.keys().next().value!);
  }

  /**
   * Takes a step's tokens before it runs. Returns 0 when it may run now, else
   * how many ms until its turn (reschedule it then). `waited`: the step already
   * stood in line and its turn has come: it takes the tokens set aside for it.
   */
  async drawForStep(
    spec: StepRateLimit,
    context: () => Promise<StepContext<unknown, unknown, string>>,
    waited: boolean,
    where: string,
  ): Promise<number> {
    const limit = this.limit(spec.name);
    // Only a partition or weight function reads the ctx: otherwise it is not built.
    const ctx = spec.partition || typeof spec.weight === "function" ? await context() : undefined;
    const partition = partitionKey(spec.partition?.(ctx!), `${where}: rateLimit.partition(ctx)`);
    const weight = checkWeight(
      typeof spec.weight === "function" ? spec.weight(ctx!) : (spec.weight ?? 1),
      `${where}: rateLimit.weight`,
      limit,
    );
    const { taken, wait_ms } = await this.take(limit, partition, weight, waited ? "retry" : "join");
    return taken ? 0 : Math.max(1, wait_ms);
  }

  /** engine.consume(): takes tokens if the bucket has them, never waits in line. */
  async consume(name: string, options: ConsumeOptions = {}): Promise<ConsumeResult> {
    checkName(name, "consume: name", (m) => new ValidationError(m));
    if (typeof options !== "object" || options === null)
      throw new ValidationError(`consume("${name}", options): options must be an object`);
    rejectUnknownKeys(options, ["partition", "weight"], `consume("${name}")`, (m) => new ValidationError(m));
    const limit = this.limit(name);
    const partition = partitionKey(options.partition, `consume("${name}"): partition`);
    const weight = checkWeight(options.weight ?? 1, `consume("${name}"): weight`, limit);
    const { taken, balance, wait_ms } = await this.take(limit, partition, weight, "none");
    return { ok: taken, remaining: balance, retryAfterMs: taken ? 0 : Math.ceil(wait_ms) };
  }

  /** The stored buckets of one limit (or all), refilled to the database's now. */
  async buckets(name?: string, max = 1000): Promise<BucketState[]> {
    if (name !== undefined) this.limit(checkName(name, "rateLimitBuckets: name", (m) => new ValidationError(m)));
    const { rows } = await this.queries.buckets(this.pool, { name: name ?? null, limit: max });
    return rows.flatMap((row) => {
      const limit = this.limits.get(row.name);
      if (!limit) return []; // a limit another deployment declared
      const elapsed = Math.max(0, row.now.getTime() - row.updated_at.getTime()) / 1000;
      return [
        {
          name: row.name,
          partition: row.partition === "" ? null : row.partition,
          tokens: Math.min(limit.burst, row.tokens + elapsed * limit.perSecond),
          capacity: limit.burst,
          refillPerSecond: limit.perSecond,
          updatedAt: row.updated_at,
          lineEnd: row.line_end,
        },
      ];
    });
  }
}
