/** Errors the engine rejects with; the Check handler maps them to the entitlement's failure mode. */

/** The engine was stopped: no more round trips start. */
export class EngineStoppedError extends Error {
  constructor() {
    super("the counting engine is stopped");
    this.name = "EngineStoppedError";
  }
}

/**
 * A round trip for this quota or seat failed moments ago, and the engine does not try again
 * before the cooldown ends, so a flood of Checks cannot become a flood of connection attempts
 * to an unreachable database. `cause` is the last failure.
 */
export class CounterUnavailableError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = "CounterUnavailableError";
  }
}
