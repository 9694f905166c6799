/**
 * Group commit. Executors hand their outcomes here; while one batch is being
 * written the next accumulates, so at concurrency 32 a busy node commits ~32
 * outcomes per round trip instead of one (measured in bench/: this is most of
 * why processing beats per-job completion). When a full batch waits behind the
 * one being written, it is written beside it (MAX_IN_FLIGHT). A step's promise
 * resolves only after its batch has committed: the guarantee holds per step.
 */
import type pg from "pg";
import { isConnectionError, isTransient } from "../db/pool.js";
import type { ClaimQueries } from "../sql/claims.js";
import type { Completion } from "./completion.js";

interface Pending {
  completion: Completion;
  resolve: (won: boolean) => void;
  reject: (error: unknown) => void;
}

/** The most outcomes one statement writes. */
export const MAX_BATCH = 500;
const CONNECTION_RETRIES = 3;
/**
 * Batches written at once. A second starts only when a full batch (MAX_BATCH) waits behind the
 * first: short steps then finish faster than one statement at a time writes their outcomes (no-op
 * jobs at concurrency 10 on 2 cores: commits of 500 back to back, the statement busy 81 % of the
 * run), and the claims behind them shrank to a few rows while the outcomes piled up. The two
 * batches hold different rows, and each takes its keys' locks before any row, in one global order
 * (lock_keys), then its rows in id order: neither waits for the other but on a key they share, and
 * then before it has locked any row. A third gained nothing measurable.
 */
const MAX_IN_FLIGHT = 2;

export class Completer {
  private queue: Pending[] = [];
  /** Batches being written. */
  private flushing = 0;
  /** whenIdle() callers, resolved when the last batch is written and nothing is queued. */
  private idleWaiters: Array<() => void> = [];

  constructor(
    private readonly pool: pg.Pool,
    /**
     * sql/claims.ts: the group commit's statements (`completeReleasingKeys` for a batch with keyed
     * outcomes; `complete`, which never names the keys' table, for the others), and `committedBy`:
     * which claims' outcomes are in the database.
     */
    private readonly statements: Pick<ClaimQueries, "complete" | "completeReleasingKeys" | "committedBy">,
  ) {}

  /** Resolves true when committed, false when the claim was lost (fenced: nothing written). */
  submit(completion: Completion): Promise<boolean> {
    return new Promise((resolve, reject) => {
      this.queue.push({ completion, resolve, reject });
      this.kick();
    });
  }

  get idle(): boolean {
    return this.flushing === 0 && this.queue.length === 0;
  }

  /** Resolves once every submitted outcome is written (or has failed). */
  async whenIdle(): Promise<void> {
    if (this.idle) return;
    await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private kick(): void {
    if (this.queue.length === 0) return;
    if (this.flushing === 0) {
      this.flushing++;
      // Let the completions of the same event-loop turn join this batch.
      setImmediate(() => void this.flush());
    } else if (this.flushing < MAX_IN_FLIGHT && this.queue.length >= MAX_BATCH) {
      this.flushing++;
      void this.flush();
    }
  }

  private async flush(): Promise<void> {
    const batch = this.queue.splice(0, MAX_BATCH);
    try {
      // Empty when a full batch submitted in the turn this flush waited for went out beside it.
      if (batch.length > 0) await this.write(batch);
    } finally {
      this.flushing--;
      this.kick();
      if (this.idle) for (const resolve of this.idleWaiters.splice(0)) resolve();
    }
  }

  private async write(batch: Pending[]): Promise<void> {
    try {
      const won = await this.commit(batch.map((p) => p.completion));
      for (const p of batch) p.resolve(won.has(p.completion.id));
    } catch (error) {
      if (batch.length === 1 || isConnectionError(error) || isTransient(error)) {
        for (const p of batch) p.reject(error);
        return;
      }
      // One bad row (say, a timestamp out of range) must not sink its batch-mates.
      for (const p of batch) await this.write([p]);
    }
  }

  private async commit(completions: Completion[]): Promise<Set<string>> {
    // The statement locks the batch's keys and then its rows in the one global order (keys by
    // lock_keys, rows by id): the batch needs no order of its own.
    const keyed = completions.some((o) => o.concurrency_key !== null);
    const statement = keyed ? this.statements.completeReleasingKeys : this.statements.complete;
    let broke = false;
    for (let attempt = 1; ; attempt++) {
      try {
        const { rows } = await statement(this.pool, { outcomes: completions });
        const won = new Set(rows.map((r) => r.id));
        return broke ? this.withEarlierCommits(completions, won) : won;
      } catch (error) {
        // Fenced writes are safe to repeat: a batch that did commit before the connection
        // dropped updates nothing the second time (withEarlierCommits then finds it).
        // A deadlock or serialization failure rolled the whole statement back: repeat it too.
        if (!(isConnectionError(error) || isTransient(error)) || attempt >= CONNECTION_RETRIES) throw error;
        broke ||= isConnectionError(error);
        await new Promise((resolve) => setTimeout(resolve, 50 * attempt));
      }
    }
  }

  /**
   * After a connection broke under a commit, the repeat wins nothing for rows whose first commit
   * landed (its reply was lost). Those are committed, not lost: their steps must go on as after
   * any commit (events, wake-ups of the next step), not be discarded and left to the poll.
   */
  private async withEarlierCommits(completions: Completion[], won: Set<string>): Promise<Set<string>> {
    const unsure = completions.filter((c) => !won.has(c.id));
    if (unsure.length === 0) return won;
    const { rows } = await this.statements.committedBy(this.pool, { claims: unsure });
    for (const { id } of rows) won.add(id);
    return won;
  }
}
