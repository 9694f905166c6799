// start() that fails before anything runs leaves the engine as new: it may be called again
// (a node that boots before its database, or before the migration ran).
import pg from "pg";
import { describe, expect, it } from "vitest";
import { z } from "zod";
import { defineJob, GenDurable, InvalidStateError, migrate, NotMigratedError } from "../../src/index.js";
import { databaseUrl } from "../support/db.js";

const Noop = defineJob({ name: "StartRetryNoop", queue: "start_retry", args: z.object({}), perform: async () => null });

describe("start() after a failed start()", () => {
  it("fails again with the same cause, not as 'already called', while the database is unreachable", async () => {
    const engine = new GenDurable({
      connectionString: "postgres://postgres@127.0.0.1:1/none",
      queues: { start_retry: 1 },
      machines: [Noop],
    });
    const first = await engine.start().then(
      () => null,
      (error: unknown) => error,
    );
    const second = await engine.start().then(
      () => null,
      (error: unknown) => error,
    );
    expect(first).toBeInstanceOf(Error);
    expect(second).not.toBeInstanceOf(InvalidStateError);
    expect(String(second)).toBe(String(first));
    await engine.stop();
  });

  it("starts once the schema it refused is migrated", async () => {
    const schema = `t_start_retry_${Date.now() % 1_000_000}`;
    const engine = new GenDurable({
      connectionString: databaseUrl(),
      schema,
      queues: { start_retry: 1 },
      machines: [Noop],
    });
    try {
      await expect(engine.start()).rejects.toBeInstanceOf(NotMigratedError);
      await migrate({ connectionString: databaseUrl(), schema });
      await engine.start();
      const { id } = await engine.insert(Noop, { args: {} });
      expect((await engine.wait(id, { timeout: 10_000 })).status).toBe("done");
    } finally {
      await engine.stop();
      const admin = new pg.Client({ connectionString: databaseUrl() });
      await admin.connect();
      await admin.query(`drop schema if exists ${schema} cascade`);
      await admin.end();
    }
  });
});
