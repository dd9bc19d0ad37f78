/**
 * Usage metering assembled: the Report handler, the spool and its replay, the reservation
 * writer the Check path records into, the reservation sweeper, and partition upkeep, with one
 * background loop and a start/stop lifecycle.
 *
 * Start after migrations (the tables must exist). `start()` opens the spool, creates the
 * partitions from the month of the oldest accepted event to `partitionsAhead` months ahead,
 * replays what an earlier process left in the spool, and starts the loop. `stop()` (after the
 * listeners stopped taking calls) writes queued reservations, tries one last replay, and
 * closes the spool; what it could not write stays in the spool (or is logged, for
 * reservations) and nothing is lost.
 */
import { join } from "node:path";
import type { Kysely } from "kysely";
import type { ReportRequestSchema, ReportResponseSchema } from "../gen/licensing/v1/licensing_pb.js";
import type { IdentityResolver } from "../licensing/identity.js";
import type { LoadingCache } from "../licensing/loading-cache.js";
import type { LicenseSnapshot } from "../licensing/snapshot.js";
import type { UnaryHandler } from "../server/rpc.js";
import type { Database } from "../store/schema.js";
import { addMonths, ensurePartitions, monthOf } from "./partitions.js";
import { createReportHandler } from "./report-handler.js";
import { createReservationWriter, type ReservationRecorder } from "./reservation-writer.js";
import { expireReservations, retryPendingReleases } from "./reservations.js";
import { createSpool, type SpoolStats } from "./spool.js";
import { createUsageRecorder, type RecorderStats } from "./usage-recorder.js";

export interface MeteringLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface MeteringOptions {
  readonly db: Kysely<Database>;
  /** The Check path's credential resolution and caches (shared, so Report sees the same). */
  readonly resolveIdentity: IdentityResolver;
  readonly licenses: LoadingCache<string, LicenseSnapshot>;
  readonly accountLicenses: LoadingCache<string, string>;
  /** USAGE_SPOOL_DIR: default DATA_DIR/spool. */
  readonly spoolDir: string;
  /** USAGE_SPOOL_MAX_BYTES: default 1 GiB. */
  readonly spoolMaxBytes?: number;
  /** USAGE_MAX_EVENT_AGE_MS: oldest occurred_at accepted. Default 35 days. */
  readonly maxEventAgeMs?: number;
  /** USAGE_MAX_FUTURE_SKEW_MS: furthest occurred_at in the future accepted. Default 5 minutes. */
  readonly maxFutureSkewMs?: number;
  /** RESERVATION_TTL_MS: an unsettled reservation is released after this long. Default 15 minutes. */
  readonly reservationTtlMs?: number;
  /** RESERVATION_FLUSH_MS: how often reservations are written. Default 200. */
  readonly reservationFlushMs?: number;
  /** Most reservations queued for writing. Default 100000. */
  readonly reservationMaxQueue?: number;
  /** USAGE_REPLAY_INTERVAL_MS: how often the spool is replayed (or PostgreSQL probed). Default 1000. */
  readonly replayIntervalMs?: number;
  /** How often expired reservations are released. Default 10000. */
  readonly sweepIntervalMs?: number;
  /** USAGE_PARTITIONS_AHEAD: monthly partitions created ahead of the current month. Default 3. */
  readonly partitionsAhead?: number;
  /** USAGE_WRITE_TIMEOUT_MS: a write not answered within this is spooled. Default 10000. */
  readonly writeTimeoutMs?: number;
  /** Run the loop on a timer (default true); tests call `tick()` instead. */
  readonly autoRun?: boolean;
  /** Epoch ms. */
  readonly now: () => number;
  readonly logger: MeteringLogger;
}

export interface MeteringStats {
  readonly spool: SpoolStats;
  readonly recorder: RecorderStats;
  readonly reservations: { recorded: number; written: number; dropped: number; queued: number; expired: number; pendingReleaseUnits: number };
}

export interface Metering {
  /** LicensingService.Report, for the licensing binding. */
  readonly report: UnaryHandler<typeof ReportRequestSchema, typeof ReportResponseSchema>;
  /** For check.ts: record a consuming Check's reservation (a memory enqueue). */
  readonly reservations: ReservationRecorder;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Runs every background pass that is due now (the timer calls it; tests too). */
  tick(): Promise<void>;
  /** Writes queued reservations now. */
  flushReservations(): Promise<number>;
  stats(): MeteringStats;
}

const DAY_MS = 86_400_000;
const PARTITION_CHECK_MS = 3_600_000;
const SWEEP_BATCH = 1000;

export function createMetering(options: MeteringOptions): Metering {
  const { db, logger, now } = options;
  const maxEventAgeMs = options.maxEventAgeMs ?? 35 * DAY_MS;
  const reservationTtlMs = options.reservationTtlMs ?? 15 * 60_000;
  const flushMs = options.reservationFlushMs ?? 200;
  const replayMs = options.replayIntervalMs ?? 1000;
  const sweepMs = options.sweepIntervalMs ?? 10_000;
  const ahead = options.partitionsAhead ?? 3;

  const spool = createSpool({ dir: options.spoolDir, maxBytes: options.spoolMaxBytes ?? 1024 ** 3, logger });
  const recorder = createUsageRecorder({ db, spool, reservationTtlMs, writeTimeoutMs: options.writeTimeoutMs ?? 10_000, now, logger });
  const writer = createReservationWriter({ db, ttlMs: reservationTtlMs, maxQueue: options.reservationMaxQueue ?? 100_000, logger });
  const report = createReportHandler({
    resolveIdentity: options.resolveIdentity,
    licenses: options.licenses,
    accountLicenses: options.accountLicenses,
    maxEventAgeMs,
    maxFutureSkewMs: options.maxFutureSkewMs ?? 5 * 60_000,
    recorder,
    now,
  });

  const due = { flush: 0, replay: 0, sweep: 0, partitions: 0 };
  const counts = { expired: 0, pendingReleaseUnits: 0 };
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<void> | undefined;

  /** Partitions for every month an accepted event may fall in, and `ahead` more. */
  async function upkeepPartitions(nowMs: number): Promise<void> {
    const created = await ensurePartitions(db, monthOf(nowMs - maxEventAgeMs), addMonths(monthOf(nowMs), ahead));
    if (created.length > 0) logger.info({ partitions: created }, "usage partitions created");
  }

  async function sweep(nowMs: number): Promise<void> {
    const expired = await expireReservations(db, nowMs, SWEEP_BATCH);
    counts.expired += expired;
    if (expired > 0) logger.info({ expired }, "unsettled reservations expired and were released");
    counts.pendingReleaseUnits = await retryPendingReleases(db, SWEEP_BATCH);
  }

  /** Runs a pass, logging (not throwing) its failure: the next tick tries again. */
  async function pass(name: string, run: () => Promise<unknown>): Promise<void> {
    try {
      await run();
    } catch (error) {
      logger.warn({ err: { message: error instanceof Error ? error.message : String(error) }, pass: name }, "metering background pass failed; retrying later");
    }
  }

  async function runDue(): Promise<void> {
    const nowMs = now();
    if (nowMs >= due.flush) {
      due.flush = nowMs + flushMs;
      if (writer.queued() > 0) await pass("reservations", () => writer.flush());
    }
    if (nowMs >= due.replay) {
      due.replay = nowMs + replayMs;
      await recorder.replay();
    }
    if (nowMs >= due.sweep) {
      due.sweep = nowMs + sweepMs;
      await pass("sweep", () => sweep(nowMs));
    }
    if (nowMs >= due.partitions) {
      due.partitions = nowMs + PARTITION_CHECK_MS;
      await pass("partitions", () => upkeepPartitions(nowMs));
    }
  }

  function tick(): Promise<void> {
    running ??= runDue().finally(() => {
      running = undefined;
    });
    return running;
  }

  async function start(): Promise<void> {
    await spool.open();
    const left = spool.stats();
    if (left.events > 0) logger.info({ events: left.events, bytes: left.bytes }, "usage spool from an earlier run found: replaying");
    await tick();
    if (options.autoRun !== false) {
      timer = setInterval(() => void tick(), Math.min(flushMs, replayMs));
      timer.unref();
    }
  }

  async function stop(): Promise<void> {
    if (timer !== undefined) clearInterval(timer);
    await running;
    await pass("reservations", () => writer.flush());
    if (writer.queued() > 0) logger.error({ reservations: writer.queued() }, "reservations could not be written before stopping (their Reports will count in full)");
    await recorder.replay();
    await spool.close();
    const left = spool.stats();
    if (left.events > 0) logger.warn({ events: left.events, bytes: left.bytes }, "usage spool kept for the next start");
  }

  return {
    report,
    reservations: writer,
    start,
    stop,
    tick,
    flushReservations: () => writer.flush(),
    stats: () => ({
      spool: spool.stats(),
      recorder: recorder.stats(),
      reservations: { ...writer.stats(), queued: writer.queued(), ...counts },
    }),
  };
}

/** The default spool directory under DATA_DIR. */
export function defaultSpoolDir(dataDir: string): string {
  return join(dataDir, "spool");
}
