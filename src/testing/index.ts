// gen-durable/testing: helpers for testing your machines and jobs. Test code only.
export { runStep } from "./run-step.js";
export type {
  AwaitedInput,
  AwaitResult,
  CancelResult,
  ChildInput,
  DoneResult,
  ErrorResult,
  NextResult,
  RunStepCommonOptions,
  RunStepOptions,
  SnoozeResult,
  SpawnedChild,
  SpawnResult,
  StepName,
  StepResult,
} from "./run-step.js";
export { drain, DrainTimeoutError } from "./drain.js";
export type { DrainOptions, DrainResult } from "./drain.js";
export { advanceTime } from "./time.js";
export type { TimeTarget } from "./time.js";
