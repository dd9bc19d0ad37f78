/**
 * The decision log: every Check's decision, written to `decision_log` in batches off the hot
 * path and hash-chained per replica (the chain is specified in decision-log/chain.ts).
 *
 * What is guaranteed:
 *   - Every decision handed to `record()` is either in the log or counted in `stats().dropped`
 *     (and logged at warn, and passed to `onOverflow`) — never silently lost. The one exception
 *     is `stop()` failing its last write: then the rows still held are logged at error.
 *   - Every deny is a row of its own, with its decision_id.
 *   - Allows: mode "denies" (the default) folds them into one row per (second, licence,
 *     feature, reason) with `count` and summed `quantity` and a null decision_id; that is what
 *     keeps the log to a few rows per second at 15k checks/s. Mode "all" writes every allow as
 *     a row of its own too. In neither mode is an allow ever left out.
 *   - Per replica, `seq` runs 1, 2, 3, ... without gaps, continuing after the replica's highest
 *     seq already in the table; each row's prev_hash is the previous row's hash.
 *
 * How: `record()` only appends to memory (a deny: one small object; an allow: a counter bump in
 * the aggregator). A timer every `flushIntervalMs` seals what is complete — all pending rows,
 * and the aggregates of every second that has ended — gives the sealed rows their seq and hash,
 * and inserts them in batches of up to `maxBatchRows`, one INSERT of a JSON array each. A
 * failed INSERT leaves its rows (already chained) in memory; the next flush checks the table's
 * tail and retries them, so the chain stays intact across a database outage as long as the rows
 * fit in `maxQueue`.
 *
 * Aggregated rows carry the start of their second as `time` and are written once that second
 * is over by `now()`, so a second's allows make one row. An allow stamped with a second that was
 * already written (a clock step back, or a Check that took over a second to record) makes a
 * second row for that key: the log stays complete, only less compact.
 *
 * Rows sealed in one flush are chained in time order (stable, so equal times keep arrival
 * order); across flushes, in flush order. `seq`, not `time`, is the chain's order.
 *
 * One writer per replica id: two live writers with the same id would fork the chain. If this
 * writer finds its seq taken by someone else, it logs an error and re-chains its unwritten rows
 * after the table's tail (verify will then show where the two met).
 */
import { sql, type Kysely } from "kysely";
import type { Database } from "../store/schema.js";
import { createAllowAggregator, type AllowAggregate } from "./decision-log/allow-aggregator.js";
import { canonicalRow, hashCanonical, type ChainRow } from "./decision-log/chain.js";

export { verifyDecisionLog, type VerifyOptions, type VerifyReport, type ReplicaVerdict } from "./decision-log/verify.js";
export { canonicalRow, chainHash, type ChainRow } from "./decision-log/chain.js";

/** One decision, as Check hands it over. */
export interface DecisionLogEntry {
  decisionId: string;
  /** When it was decided, epoch milliseconds. */
  timeMs: number;
  /** Null when no licence was found (unknown credential, say). */
  licenseId: string | null;
  feature: string;
  allow: boolean;
  /** The Reason enum's name without prefix, e.g. "OK", "QUOTA_EXHAUSTED". */
  reason: string;
  /** Units asked for: a non-negative safe integer. */
  quantity: number;
}

/** "denies": allows are aggregated, denies are rows of their own. "all": every decision is a row. */
export type DecisionLogMode = "all" | "denies";

export interface DecisionLogLogger {
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface DecisionLogOptions {
  db: Kysely<Database>;
  /** This writer's chain. Unique among live writers; stable across restarts to continue a chain. */
  replicaId: string;
  /** Default "denies" (allows aggregated). */
  mode?: DecisionLogMode;
  /**
   * Most rows held in memory (pending, aggregating, or written-and-failed), default 100_000.
   * When full, a decision that needs a new row is dropped and counted; an allow that folds into
   * an existing aggregated row is still taken, as it needs no memory.
   */
  maxQueue?: number;
  /** Pause between the end of one background flush and the start of the next, ms. Default 1000. */
  flushIntervalMs?: number;
  /** Rows per INSERT, default 5000: one statement of about 1.5 MB of JSON at most. */
  maxBatchRows?: number;
  /** Epoch milliseconds; decides which aggregation seconds are over. Default Date.now. */
  now?: () => number;
  logger: DecisionLogLogger;
  /**
   * Told how many decisions were dropped since it was last called (queue full, or an entry
   * with an invalid quantity or time). Called from the flush, at most once per interval.
   */
  onOverflow?: (dropped: number) => void;
}

export interface DecisionLogStats {
  /** Rows held in memory, not yet in the table. */
  queued: number;
  /** Rows inserted. */
  written: number;
  /** Decisions dropped: queue full, invalid entry, or recorded after stop(). */
  dropped: number;
  /** Allowed decisions folded into aggregated rows (each counted once, when recorded). */
  aggregatedAllows: number;
  /** Failed flush attempts (an INSERT, or reading the chain's tail, that threw). */
  flushFailures: number;
}

export interface DecisionLog {
  /** Takes one decision. Synchronous, never throws, no I/O: called on every Check. */
  record(entry: DecisionLogEntry): void;
  /**
   * Writes every complete row (the current second's allows wait for the second to end). Never
   * rejects: a failure is logged, counted in `flushFailures` and retried by the next flush.
   * Concurrent calls queue behind one another.
   */
  flush(): Promise<void>;
  /** Reads the chain's tail (retried by later flushes if the database is away) and starts the timer. */
  start(): Promise<void>;
  /** Stops the timer and writes everything, aggregates of the current second included. One attempt. */
  stop(): Promise<void>;
  stats(): DecisionLogStats;
}

const DEFAULTS = { mode: "denies", maxQueue: 100_000, flushIntervalMs: 1000, maxBatchRows: 5000 } as const;

/** A row sealed for writing: seq and hashes assigned. */
interface ChainedRow extends ChainRow {
  /** timeMs as `Date#toISOString` prints it: hashed, and stored as is. */
  time: string;
  prevHash: string;
  hash: string;
  /**
   * The row as the INSERT sends it: its canonical JSON array (what was hashed) with prev_hash
   * and hash appended, so a batch is one string of JSON built from what hashing already made.
   */
  json: string;
}

/** A row before it has a place in the chain. */
type UnchainedRow = Omit<ChainRow, "replicaId" | "seq">;

/** The last row of the chain as this writer knows it (seq 0 and "" before the first row). */
interface ChainHead {
  seq: number;
  hash: string;
}

/** Throws a RangeError naming the option when a numeric option is not a positive integer. */
function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new RangeError(`decision log option ${name} must be a positive integer, got ${value}`);
  }
  return value;
}

export function createDecisionLog(options: DecisionLogOptions): DecisionLog {
  const { db, replicaId, logger } = options;
  if (replicaId === "") throw new RangeError("decision log option replicaId must not be empty");
  const aggregateAllows = (options.mode ?? DEFAULTS.mode) === "denies";
  const maxQueue = positiveInteger("maxQueue", options.maxQueue ?? DEFAULTS.maxQueue);
  const flushIntervalMs = positiveInteger("flushIntervalMs", options.flushIntervalMs ?? DEFAULTS.flushIntervalMs);
  const maxBatchRows = positiveInteger("maxBatchRows", options.maxBatchRows ?? DEFAULTS.maxBatchRows);
  const now = options.now ?? Date.now;

  const aggregator = createAllowAggregator();
  /** Rows of their own (denies; allows too in mode "all"), in arrival order. */
  let pending: UnchainedRow[] = [];
  /** Chained rows not yet in the table, in seq order. */
  const ready: ChainedRow[] = [];
  /** Undefined until read from the table: nothing is chained before that. */
  let head: ChainHead | undefined;
  /** Set by a failed INSERT: the table's tail must be compared with `ready` before retrying. */
  let mustReconcile = false;
  let consecutiveFailures = 0;

  let written = 0;
  let dropped = 0;
  let droppedUnreported = 0;
  let invalidUnreported = 0;
  let aggregatedAllows = 0;
  let flushFailures = 0;

  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  /** The flush in progress or queued last; flushes run one at a time. */
  let flushing: Promise<void> = Promise.resolve();

  function held(): number {
    return pending.length + aggregator.size + ready.length;
  }

  function drop(invalid: boolean): void {
    dropped += 1;
    droppedUnreported += 1;
    if (invalid) invalidUnreported += 1;
  }

  function record(entry: DecisionLogEntry): void {
    // Checked here because one bad row would fail every INSERT it is batched into, forever.
    if (stopped || !Number.isSafeInteger(entry.quantity) || entry.quantity < 0 || !Number.isFinite(entry.timeMs)) {
      drop(!stopped);
      return;
    }
    const room = held() < maxQueue;
    if (entry.allow && aggregateAllows) {
      const { timeMs, licenseId, feature, reason, quantity } = entry;
      if (aggregator.add(timeMs, licenseId, feature, reason, quantity, room)) aggregatedAllows += 1;
      else drop(false);
      return;
    }
    if (!room) {
      drop(false);
      return;
    }
    pending.push({
      decisionId: entry.decisionId,
      timeMs: entry.timeMs,
      licenseId: entry.licenseId,
      feature: entry.feature,
      decision: entry.allow ? "allow" : "deny",
      reason: entry.reason,
      quantity: entry.quantity,
      count: 1,
    });
  }

  /** Once per flush: the decisions dropped since the last report, at warn and to onOverflow. */
  function reportDrops(): void {
    if (droppedUnreported === 0) return;
    const count = droppedUnreported;
    logger.warn(
      { replicaId, dropped: count, invalid: invalidUnreported, droppedTotal: dropped, queued: held(), maxQueue },
      "decision log dropped decisions (queue full or invalid entries)",
    );
    droppedUnreported = 0;
    invalidUnreported = 0;
    try {
      options.onOverflow?.(count);
    } catch (error) {
      // A metrics hook must not stop the log from being written; the drop is already logged.
      logger.error({ err: errorSummary(error) }, "decision log onOverflow callback threw");
    }
  }

  /** Moves pending rows and ended aggregates into `ready`, giving each its seq and hash. */
  function seal(head: ChainHead, endedBy: number): ChainHead {
    const rows: UnchainedRow[] = pending;
    pending = [];
    for (const aggregate of aggregator.drainEndedBy(endedBy)) rows.push(aggregateRow(aggregate));
    rows.sort((a, b) => a.timeMs - b.timeMs);
    let last = head;
    for (const row of rows) {
      const chained = chainAfter(last, row);
      ready.push(chained);
      last = chained;
    }
    return last;
  }

  function chainAfter(previous: ChainHead, row: UnchainedRow): ChainedRow {
    const timeMs = Math.floor(row.timeMs);
    const chained: ChainedRow = {
      replicaId,
      seq: previous.seq + 1,
      ...storable(row),
      timeMs,
      time: new Date(timeMs).toISOString(),
      prevHash: previous.hash,
      hash: "",
      json: "",
    };
    const canonical = canonicalRow(chained, chained.time);
    chained.hash = hashCanonical(previous.hash, canonical);
    // Both hashes are lowercase hex or "": JSON strings as they are.
    chained.json = `${canonical.slice(0, -1)},"${previous.hash}","${chained.hash}"]`;
    return chained;
  }

  /**
   * After a failed INSERT, the table may hold some of `ready` after all (the commit succeeded
   * but the answer was lost) or rows of another writer with the same replica id. Drops what is
   * already there; re-chains after the table's tail only when the seqs are taken by other rows.
   */
  async function reconcile(): Promise<void> {
    const tail = await readTail(db, replicaId);
    const first = ready[0];
    if (first === undefined || tail.seq < first.seq) return; // nothing of ours is in the table
    const committed = ready[tail.seq - first.seq];
    if (committed !== undefined && committed.hash === tail.hash) {
      ready.splice(0, tail.seq - first.seq + 1);
      written += tail.seq - first.seq + 1;
      return;
    }
    logger.error(
      { replicaId, tableSeq: tail.seq, expectedSeq: first.seq },
      "decision log: this replica's seqs are taken by rows this writer did not write (another writer with the same replica id?); re-chaining unwritten rows after the table's tail",
    );
    const rows = ready.splice(0);
    let last: ChainHead = tail;
    for (const row of rows) {
      const chained = chainAfter(last, row);
      ready.push(chained);
      last = chained;
    }
    head = last;
  }

  /** Inserts `ready` in batches; stops at the first failure, keeping that batch and the rest. */
  async function writeReady(): Promise<void> {
    while (ready.length > 0) {
      const batch = ready.slice(0, maxBatchRows);
      await insertRows(db, batch);
      ready.splice(0, batch.length);
      written += batch.length;
    }
  }

  async function flushOnce(all: boolean): Promise<void> {
    reportDrops();
    try {
      head ??= await readTail(db, replicaId);
      if (mustReconcile) {
        await reconcile();
        mustReconcile = false;
      }
      head = seal(head, all ? Infinity : now());
      await writeReady();
      consecutiveFailures = 0;
    } catch (error) {
      flushFailures += 1;
      consecutiveFailures += 1;
      mustReconcile = head !== undefined;
      logger.warn(
        { replicaId, err: errorSummary(error), attempt: consecutiveFailures, queued: held(), maxQueue },
        "decision log flush failed; keeping rows for the next attempt",
      );
    }
  }

  function flush(all = false): Promise<void> {
    flushing = flushing.then(() => flushOnce(all));
    return flushing;
  }

  function schedule(): void {
    if (stopped) return;
    timer = setTimeout(() => {
      void flush().then(schedule);
    }, flushIntervalMs);
    // The log must not keep a process alive on its own; stop() is what writes the last rows.
    timer.unref();
  }

  async function start(): Promise<void> {
    if (timer !== undefined || stopped) throw new Error("decision log: start() called twice, or after stop()");
    try {
      head = await readTail(db, replicaId);
    } catch (error) {
      // Not fatal: Checks must not wait on the database. Rows queue until a flush reads the tail.
      logger.warn({ replicaId, err: errorSummary(error) }, "decision log could not read its chain's tail; will retry");
    }
    schedule();
  }

  async function stop(): Promise<void> {
    stopped = true;
    clearTimeout(timer);
    await flush(true);
    if (held() > 0) {
      logger.error({ replicaId, rows: held() }, "decision log stopped with rows it could not write; they are lost");
    }
  }

  function stats(): DecisionLogStats {
    return { queued: held(), written, dropped, aggregatedAllows, flushFailures };
  }

  return { record, flush: () => flush(false), start, stop, stats };
}

function aggregateRow(aggregate: AllowAggregate): UnchainedRow {
  return {
    decisionId: null,
    timeMs: aggregate.timeMs,
    licenseId: aggregate.licenseId,
    feature: aggregate.feature,
    decision: "allow",
    reason: aggregate.reason,
    quantity: aggregate.quantity,
    count: aggregate.count,
  };
}

/**
 * What the table can store exactly, so the hash covers what is stored: no NUL characters
 * (PostgreSQL text cannot hold them) and no lone UTF-16 surrogates (UTF-8 cannot carry them;
 * a feature name from a JSON request can hold one). Both become U+FFFD. Times are made whole
 * milliseconds by chainAfter.
 */
function storable(row: UnchainedRow): Omit<UnchainedRow, "timeMs"> {
  return {
    decisionId: row.decisionId === null ? null : storableText(row.decisionId),
    licenseId: row.licenseId === null ? null : storableText(row.licenseId),
    feature: storableText(row.feature),
    decision: row.decision,
    reason: storableText(row.reason),
    quantity: row.quantity,
    count: row.count,
  };
}

function storableText(text: string): string {
  const wellFormed = text.isWellFormed() ? text : text.toWellFormed();
  return wellFormed.includes("\u0000") ? wellFormed.replaceAll("\u0000", "\uFFFD") : wellFormed;
}

/**
 * One INSERT per batch with one parameter: a JSON array of the rows' `json` arrays, in the
 * table's column order. The rows' canonical JSON is made for hashing anyway, so the batch costs
 * a string join here, where twelve array parameters cost pg an escaped array literal per column
 * (about 10 KB of garbage per row); the writer inserts every deny.
 */
async function insertRows(db: Kysely<Database>, rows: readonly ChainedRow[]): Promise<void> {
  const batch = `[${rows.map((row) => row.json).join(",")}]`;
  await sql`
    insert into decision_log (replica_id, seq, decision_id, time, license_id, feature, decision, reason, quantity, count, prev_hash, hash)
    select r->>0, (r->>1)::int8, r->>2, (r->>3)::timestamptz, r->>4, r->>5, r->>6, r->>7, (r->>8)::int8, (r->>9)::int4, r->>10, r->>11
    from jsonb_array_elements(${batch}::jsonb) as r
  `.execute(db);
}

/** The replica's last row in the table, or seq 0 and "" when it has none. */
async function readTail(db: Kysely<Database>, replicaId: string): Promise<ChainHead> {
  const row = await db
    .selectFrom("decision_log")
    .select(["seq", "hash"])
    .where("replica_id", "=", replicaId)
    .orderBy("seq", "desc")
    .limit(1)
    .executeTakeFirst();
  return row ?? { seq: 0, hash: "" };
}

/** Message and SQLSTATE of an error, for logs: never the parameters (they hold row data). */
function errorSummary(error: unknown): { message: string; code?: string } {
  if (!(error instanceof Error)) return { message: String(error) };
  const code: unknown = (error as { code?: unknown }).code;
  return typeof code === "string" ? { message: error.message, code } : { message: error.message };
}
