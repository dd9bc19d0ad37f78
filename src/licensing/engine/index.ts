/** The counting engine behind Check; see counters-engine.ts. */
export { createCounters, type CountersEngine } from "./counters-engine.js";
export { CounterUnavailableError, EngineStoppedError } from "./errors.js";
export type { EngineLogger, EngineOptions, EngineStats } from "./options.js";
export { periodEndMs, periodStartMs } from "./period.js";
