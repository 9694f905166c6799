// Compile-time contract of idempotencyKey and ifExists on insert, insertMany and ctx.spawn, and of KeyExistsError.
import { expectTypeOf } from "vitest";
import { z } from "zod";
import {
  defineJob,
  defineMachine,
  GenDurable,
  KeyExistsError,
  type ErrorCode,
  type InsertResult,
  type InstanceOptions,
} from "../../src/index.js";

const Transfer = defineJob({
  name: "Transfer",
  args: z.object({ amount: z.number() }),
  perform: async () => null,
});

const Batch = defineMachine({
  name: "Batch",
  state: z.object({ key: z.string() }),
  steps: {
    start: (ctx) =>
      ctx.spawn([{ machine: Transfer, args: { amount: 1 }, idempotencyKey: ctx.state.key, ifExists: "allow" }], "end"),
    end: (ctx) => ctx.done(),
  },
});

declare const engine: GenDurable;
expectTypeOf(engine.insert(Transfer, { args: { amount: 1 }, idempotencyKey: "request:1" })).resolves.toEqualTypeOf<
  InsertResult<typeof Transfer>
>();
void engine.insert(Transfer, { args: { amount: 1 }, correlationKey: "transfer:1", ifExists: "reject" });
void engine.insert(Transfer, { args: { amount: 1 }, correlationKey: "transfer:1", ifExists: "reuse" });
void engine.insert(Batch, { state: { key: "k" }, correlationKey: "batch:1", ifExists: "allow" });
// @ts-expect-error ifExists is "reuse", "reject" or "allow"
void engine.insert(Transfer, { args: { amount: 1 }, correlationKey: "transfer:1", ifExists: "replace" });
// @ts-expect-error an idempotency key is a string
void engine.insert(Transfer, { args: { amount: 1 }, idempotencyKey: 42 });
void engine.insertMany([{ machine: Transfer, args: { amount: 1 }, idempotencyKey: "request:2" }]);

expectTypeOf<InstanceOptions["ifExists"]>().toEqualTypeOf<"reuse" | "reject" | "allow" | undefined>();
expectTypeOf<InstanceOptions["idempotencyKey"]>().toEqualTypeOf<string | undefined>();

const error = new KeyExistsError("transfer:1", "7");
expectTypeOf(error.correlationKey).toBeString();
expectTypeOf(error.existingId).toBeString();
expectTypeOf(error.code).toEqualTypeOf<ErrorCode>();
expectTypeOf<"KEY_EXISTS">().toMatchTypeOf<ErrorCode>();
