/**
 * The error hierarchy. Every error the engine throws on purpose is a
 * `GenDurableError` with a stable string `code` that callers may switch on.
 */
export type ErrorCode =
  | "VALIDATION"
  | "CONFIG"
  | "UNKNOWN_INSTANCE"
  | "INSTANCE_TERMINATED"
  | "INVALID_STATE"
  | "LEASE_LOST"
  | "STEP_TIMEOUT"
  | "NOT_MIGRATED"
  | "WAIT_TIMEOUT"
  | "ENGINE_STOPPED"
  | "KEY_EXISTS"
  | "NON_RETRYABLE";

/** The base class of every error the engine throws on purpose; switch on `code`, or use `instanceof`. */
export class GenDurableError extends Error {
  /** A stable code for the kind of error, e.g. `"VALIDATION"`; the same for an error and its subclasses' instances. */
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Bad input: a state or args that fail their schema, a payload that is not JSON, a bad name. */
export class ValidationError extends GenDurableError {
  /** Where in the value the problem is, e.g. `["order", "id"]`, when known. */
  readonly issues: ReadonlyArray<{
    /** What is wrong there. */
    message: string;
    /** The keys leading to the bad value from the top of the checked value. */
    path?: ReadonlyArray<PropertyKey>;
  }>;
  constructor(message: string, issues: ReadonlyArray<{ message: string; path?: ReadonlyArray<PropertyKey> }> = []) {
    super("VALIDATION", message);
    this.issues = issues;
  }
}

/** A bad engine option, machine definition or migration option. */
export class ConfigError extends GenDurableError {
  constructor(message: string) {
    super("CONFIG", message);
  }
}

/** No instance has that id, or no live instance has that correlation key (a signal without `ifMissing: "keep"`). */
export class UnknownInstanceError extends GenDurableError {
  constructor(target: string) {
    super("UNKNOWN_INSTANCE", `no instance ${target}`);
  }
}

/** The instance is done, failed or cancelled, so it cannot take the signal, cancel or wait asked of it. */
export class InstanceTerminatedError extends GenDurableError {
  constructor(target: string, status: string) {
    super("INSTANCE_TERMINATED", `instance ${target} is already ${status}`);
  }
}

/** An operation that does not fit the instance's current status (e.g. retry of a running instance). */
export class InvalidStateError extends GenDurableError {
  constructor(message: string) {
    super("INVALID_STATE", message);
  }
}

/**
 * The claim on an instance was lost (lease expired, cancelled, or claimed elsewhere): the step's result was discarded.
 */
export class LeaseLostError extends GenDurableError {
  constructor(id: string) {
    super("LEASE_LOST", `lease on instance ${id} was lost; the step's outcome was not committed`);
  }
}

/** A step ran longer than its `timeout`: the attempt fails with this error (and is retried if attempts remain). */
export class StepTimeoutError extends GenDurableError {
  constructor(machine: string, step: string, timeoutMs: number) {
    super("STEP_TIMEOUT", `step "${step}" of machine "${machine}" ran longer than its timeout of ${timeoutMs} ms`);
  }
}

/** The schema is older than this version of gen-durable needs: run `migrate()` (or `gen-durable migrate`) first. */
export class NotMigratedError extends GenDurableError {
  constructor(schema: string, have: number, want: number) {
    super(
      "NOT_MIGRATED",
      have === 0
        ? `schema "${schema}" is not migrated: run \`npx gen-durable migrate\` or call migrate() first`
        : `schema "${schema}" is at migration ${have} but this version of gen-durable needs ${want}: ` +
            "run `npx gen-durable migrate`",
    );
  }
}

/** `engine.wait` gave up: the instance had not finished within the timeout (it keeps running). */
export class WaitTimeoutError extends GenDurableError {
  constructor(id: string, timeoutMs: number) {
    super("WAIT_TIMEOUT", `instance ${id} did not finish within ${timeoutMs} ms`);
  }
}

/** The engine is stopped: it takes no more calls, and the steps a stop abandons are aborted with this reason. */
export class EngineStoppedError extends GenDurableError {
  constructor() {
    super("ENGINE_STOPPED", "the engine is stopped");
  }
}

/**
 * An insert with `ifExists: "reject"` found an instance with its correlation key, live or finished within the
 * window.
 */
export class KeyExistsError extends GenDurableError {
  constructor(
    /** The correlation key of the insert. */
    readonly correlationKey: string,
    /** The id of the instance that holds the key. */
    readonly existingId: string,
  ) {
    super(
      "KEY_EXISTS",
      `an instance with correlation key ${JSON.stringify(correlationKey)} already exists (instance ${existingId}) ` +
        `and ifExists is "reject"`,
    );
  }
}

/** engine.waitForEvent gave up: the instance had not published the key within the timeout. */
export class EventTimeoutError extends GenDurableError {
  constructor(target: string, key: string, timeoutMs: number) {
    super("WAIT_TIMEOUT", `instance ${target} did not publish ${JSON.stringify(key)} within ${timeoutMs} ms`);
  }
}

/**
 * Thrown by a step: its attempt fails at once, without the retries it has left (the instance ends
 * failed, or runs the step's onFailure step). A card declined for good, an account that is closed.
 */
export class NonRetryableError extends GenDurableError {
  constructor(message: string, options?: { cause?: unknown }) {
    super("NON_RETRYABLE", message, options);
  }
}
