// The public surface of gen-durable. Everything else is internal.
export { GenDurable } from "./engine.js";
export type {
  Instance,
  InsertOptions,
  InsertManyItem,
  InsertResult,
  ListFilter,
  SignalOptions,
  SignalResult,
  Transition,
} from "./instance.js";
export type { Status } from "./status.js";
export { defineMachine, defineJob } from "./define.js";
export type {
  AnyMachine,
  AwaitSpec,
  JoinCondition,
  SpawnOptions,
  ChildOutcome,
  ChildSpec,
  InstanceOptions,
  Job,
  JobDefinition,
  Machine,
  MachineDefinition,
  ReceivedSignal,
  RetryOptions,
  StepCancellation,
  StepContext,
  StepFailure,
  StepDefinition,
  StepLogger,
  StepOptions,
  StepOutcome,
} from "./define.js";
export type { InstanceId, InstanceRef, ResultOf, SignalSchemas, StateOf, PayloadsOf } from "./machine-types.js";
export type { MachineGraph } from "./machine-typing.js";
export type { CheckReport, MoveOptions, StrandedInstance } from "./runtime/versions.js";
export type { GenDurableOptions, QueueOption } from "./config.js";
export type { CronEntry, MissedPolicy } from "./cron/entries.js";
export type { Backoff } from "./backoff.js";
export type { Duration } from "./duration.js";
export type { EngineEvents, EngineEventName, LoopName, StepFacts } from "./events.js";
export type { TelemetryOption, TelemetryOptions } from "./telemetry/index.js";
export type { Explanation } from "./runtime/explain.js";
export type { PruneOptions, PruneResult } from "./loops/gc.js";
export type { ErrorRecord } from "./json.js";
export type { Logger } from "./logger.js";
export { migrate, Migration } from "./migrate.js";
export { createDashboard } from "./dashboard/index.js";
export type { DashboardOptions, DashboardHandler } from "./dashboard/index.js";
export type { MigrateOptions } from "./migrate.js";
export {
  GenDurableError,
  ValidationError,
  ConfigError,
  UnknownInstanceError,
  InstanceTerminatedError,
  InvalidStateError,
  LeaseLostError,
  StepTimeoutError,
  NotMigratedError,
  WaitTimeoutError,
  EventTimeoutError,
  EngineStoppedError,
  KeyExistsError,
  NonRetryableError,
} from "./errors.js";
export type { ErrorCode } from "./errors.js";
