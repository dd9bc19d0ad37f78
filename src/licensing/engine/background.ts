/**
 * The engine's background loop: a settle pass every settleIntervalMs and a heartbeat pass every
 * heartbeatIntervalMs, both measured on the injected clock. `tick()` runs whatever is due, so
 * tests drive time explicitly; with `autoRun`, a timer calls `tick()` (never overlapping itself).
 * A pass never throws: it reports failures (throttled) and the next pass retries.
 */
import type { EngineLogger } from "./options.js";

export interface Pass {
  readonly name: string;
  readonly intervalMs: number;
  /** Rejects when Postgres failed; the pass keeps what it could not write for the next run. */
  run(nowMs: number): Promise<void>;
}

export interface BackgroundLoop {
  /** Runs the passes that are due at `now()`; resolves when they finished. */
  tick(): Promise<void>;
  startTimer(): void;
  /** Stops the timer and waits for passes under way. */
  stop(): Promise<void>;
}

/** While a pass keeps failing, it is logged at most this often, ms (with the count of failures). */
const FAILURE_LOG_INTERVAL_MS = 30_000;

export function createBackgroundLoop(
  passes: readonly Pass[],
  now: () => number,
  logger: EngineLogger,
  onFailure: () => void,
): BackgroundLoop {
  const nextDueMs = new Map<Pass, number>(passes.map((pass) => [pass, now() + pass.intervalMs]));
  const running = new Map<Pass, Promise<void>>();
  const failures = new Map<Pass, { count: number; loggedAtMs: number }>();
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  function run(pass: Pass, nowMs: number): Promise<void> {
    const underway = running.get(pass);
    if (underway !== undefined) return underway;
    nextDueMs.set(pass, nowMs + pass.intervalMs);
    const done = pass.run(nowMs).then(
      () => recovered(pass),
      (error: unknown) => failed(pass, error),
    );
    const tracked = done.finally(() => running.delete(pass));
    running.set(pass, tracked);
    return tracked;
  }

  function failed(pass: Pass, error: unknown): void {
    onFailure();
    const nowMs = now();
    const state = failures.get(pass) ?? { count: 0, loggedAtMs: Number.NEGATIVE_INFINITY };
    state.count += 1;
    failures.set(pass, state);
    if (nowMs - state.loggedAtMs < FAILURE_LOG_INTERVAL_MS) return;
    state.loggedAtMs = nowMs;
    logger.warn({ pass: pass.name, failures: state.count, err: describe(error) }, "background pass failed; retrying");
  }

  function recovered(pass: Pass): void {
    const state = failures.get(pass);
    if (state === undefined) return;
    failures.delete(pass);
    logger.info({ pass: pass.name, failures: state.count }, "background pass recovered");
  }

  async function tick(): Promise<void> {
    const nowMs = now();
    const due = passes.filter((pass) => nowMs >= (nextDueMs.get(pass) ?? 0)).map((pass) => run(pass, nowMs));
    await Promise.all(due);
  }

  function startTimer(): void {
    if (timer !== undefined || stopped) return;
    const periodMs = Math.min(...passes.map((pass) => pass.intervalMs));
    const schedule = (): void => {
      timer = setTimeout(() => {
        void tick().finally(() => {
          if (!stopped) schedule();
        });
      }, periodMs);
      // The loop must not keep the process alive on its own; shutdown calls stop().
      timer.unref();
    };
    schedule();
  }

  async function stop(): Promise<void> {
    stopped = true;
    if (timer !== undefined) clearTimeout(timer);
    timer = undefined;
    await Promise.all(running.values());
  }

  return { tick, startTimer, stop };
}

/** An error for the log: message and code, never the whole object (it may carry a query's values). */
export function describe(error: unknown): { message: string; code?: string } {
  if (!(error instanceof Error)) return { message: String(error) };
  const code: unknown = (error as { code?: unknown }).code;
  return typeof code === "string" ? { message: error.message, code } : { message: error.message };
}
