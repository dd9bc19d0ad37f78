/**
 * Where a validated batch goes to become durable: PostgreSQL when it answers, the local spool
 * when it does not, and back from the spool into PostgreSQL when it answers again.
 *
 * - A write that fails because PostgreSQL is unreachable (connection refused, reset, lost,
 *   timed out, shutting down) goes to the spool instead, and the recorder marks PostgreSQL
 *   "down": further batches go straight to the spool without waiting on a dead connection,
 *   until a replay (or probe) succeeds. A write whose outcome is unknown (the connection died
 *   around COMMIT) is spooled as well; replaying it is harmless because inserts are idempotent.
 * - Spooled batches answer accepted = number of events, duplicates = 0: whether an event was
 *   a duplicate is learned on replay (counted in stats.replayDuplicates), not before.
 * - Any other database error is not spooled (replaying it would fail forever): it is thrown
 *   and the caller answers an error, so the client retries and nothing is acknowledged.
 * - Batches that move quota counters are written through a group commit (./group-commit.ts):
 *   two transactions in flight at most, the next carrying every such batch that arrived
 *   while they ran.
 */
import { sql, type Kysely } from "kysely";
import type { Database } from "../store/schema.js";
import { createGroupCommit } from "./group-commit.js";
import { SpoolFullError, type Spool } from "./spool.js";
import { insertUsageBatch, insertUsageBatches, type BatchResult, type PreparedEvent } from "./usage-store.js";

export interface RecorderLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface UsageRecorderOptions {
  readonly db: Kysely<Database>;
  readonly spool: Spool;
  readonly reservationTtlMs: number;
  /** A write not answered within this many ms is treated as unreachable PostgreSQL (and spooled). */
  readonly writeTimeoutMs: number;
  readonly now: () => number;
  readonly logger: RecorderLogger;
}

export interface RecorderStats {
  readonly databaseUp: boolean;
  readonly batchesWritten: number;
  readonly eventsAccepted: number;
  readonly eventsDuplicate: number;
  readonly batchesSpooled: number;
  readonly eventsSpooled: number;
  readonly replayDuplicates: number;
  readonly replayFailures: number;
  /** Group-commit transactions written for batches that move quota counters. */
  readonly groupCommits: number;
  /** Batches those transactions carried (÷ groupCommits = batches per transaction). */
  readonly groupCommitBatches: number;
  /** Groups that failed and were written again one batch at a time. */
  readonly groupCommitSplits: number;
}

/** A group-commit transaction stops growing at this many events (ten full Report calls). */
const GROUP_COMMIT_MAX_EVENTS = 10_000;
/** Group-commit transactions in flight at once (see ./group-commit.ts for the measurements). */
const GROUP_COMMIT_IN_FLIGHT = 2;

export interface UsageRecorder {
  /** Makes the batch durable; rejects with SpoolFullError or a non-connectivity database error. */
  record(events: readonly PreparedEvent[]): Promise<BatchResult>;
  /**
   * Replays the spool into PostgreSQL (and probes it when "down" with an empty spool).
   * Resolves the events replayed; never rejects (failures are counted and logged).
   */
  replay(): Promise<number>;
  stats(): RecorderStats;
}

export class WriteTimeoutError extends Error {
  constructor(ms: number) {
    super(`the usage write was not answered within ${ms} ms`);
    this.name = "WriteTimeoutError";
  }
}

export function createUsageRecorder(options: UsageRecorderOptions): UsageRecorder {
  const { db, spool, logger } = options;
  let databaseUp = true;
  const counts = { batchesWritten: 0, eventsAccepted: 0, eventsDuplicate: 0, batchesSpooled: 0, eventsSpooled: 0, replayDuplicates: 0, replayFailures: 0 };

  const insertOptions = () => ({ reservationTtlMs: options.reservationTtlMs, nowMs: options.now() });
  const grouped = createGroupCommit({
    write: (batches) => insertUsageBatches(db, batches, insertOptions()),
    isUnreachable,
    maxEvents: GROUP_COMMIT_MAX_EVENTS,
    maxInFlight: GROUP_COMMIT_IN_FLIGHT,
    onSplit: (error, batches) =>
      logger.warn({ err: describeError(error), batches }, "a group of usage batches failed together; writing each batch alone"),
  });

  function write(events: readonly PreparedEvent[]): Promise<BatchResult> {
    const insert = events.some((e) => e.quota !== null) ? grouped.write(events) : insertUsageBatch(db, events, insertOptions());
    return withTimeout(insert, options.writeTimeoutMs);
  }

  async function record(events: readonly PreparedEvent[]): Promise<BatchResult> {
    if (databaseUp) {
      try {
        const result = await write(events);
        counts.batchesWritten += 1;
        counts.eventsAccepted += result.accepted;
        counts.eventsDuplicate += result.duplicates;
        return result;
      } catch (error) {
        if (!isUnreachable(error)) {
          logger.error({ err: describeError(error), events: events.length }, "could not record a usage batch; the caller is told to retry");
          throw error;
        }
        markDown(error);
      }
    }
    await spool.append(events);
    counts.batchesSpooled += 1;
    counts.eventsSpooled += events.length;
    return { accepted: events.length, duplicates: 0 };
  }

  function markDown(error: unknown): void {
    if (!databaseUp) return;
    databaseUp = false;
    logger.warn({ err: describeError(error) }, "PostgreSQL is unreachable: usage reports go to the local spool until it is back");
  }

  async function replay(): Promise<number> {
    if (spool.isEmpty()) {
      if (!databaseUp) await probe();
      return 0;
    }
    try {
      const replayed = await spool.replay(async (events) => {
        const result = await write(events);
        counts.replayDuplicates += result.duplicates;
      });
      if (!databaseUp) logger.info({ replayed }, "PostgreSQL is back: the usage spool was replayed");
      databaseUp = true;
      return replayed;
    } catch (error) {
      counts.replayFailures += 1;
      if (isUnreachable(error)) markDown(error);
      // Kept in the spool for the next pass; nothing is dropped.
      else logger.error({ err: describeError(error) }, "could not replay a spooled usage batch; it stays in the spool and is retried");
      return 0;
    }
  }

  async function probe(): Promise<void> {
    try {
      await withTimeout(sql`select 1`.execute(db), options.writeTimeoutMs);
      databaseUp = true;
      logger.info({}, "PostgreSQL is back: usage reports are written to it again");
    } catch {
      // Still down: the next pass probes again.
    }
  }

  return {
    record,
    replay,
    stats: () => {
      const group = grouped.stats();
      return { databaseUp, ...counts, groupCommits: group.groups, groupCommitBatches: group.batches, groupCommitSplits: group.splits };
    },
  };
}

export { SpoolFullError };

const CONNECTION_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ETIMEDOUT",
  "EPIPE",
  "ENOTFOUND",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "EAI_AGAIN",
  // SQLSTATE: admin_shutdown, crash_shutdown, cannot_connect_now, too_many_connections.
  "57P01",
  "57P02",
  "57P03",
  "53300",
]);

/**
 * True when the error means "PostgreSQL could not be reached or the connection was lost"
 * (pg's own errors carry no code for some of these, hence the messages).
 */
export function isUnreachable(error: unknown): boolean {
  if (error instanceof WriteTimeoutError) return true;
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code === "string" && (CONNECTION_CODES.has(code) || code.startsWith("08"))) return true;
  const message = error instanceof Error ? error.message : "";
  return /Connection terminated|timeout exceeded when trying to connect|connection error|Client was closed|not queryable/i.test(message);
}

function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WriteTimeoutError(ms)), ms);
  });
  // The write may still complete after the timeout: it is spooled anyway, and the replay of an
  // already committed batch only counts duplicates.
  promise.catch(() => undefined);
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Message and code only: driver errors can carry the query text and parameters. */
function describeError(error: unknown): { message: string; code?: string } {
  const code = (error as { code?: unknown } | null)?.code;
  return { message: error instanceof Error ? error.message : String(error), ...(typeof code === "string" ? { code } : {}) };
}
