/**
 * The counting engine's options, their defaults and units, and its statistics.
 * Validated once by `resolveEngineOptions`; a bad value throws naming the option.
 */
import type { Kysely } from "kysely";
import type { Database } from "../../store/schema.js";

/** pino's shape: a structured object, then the message. */
export interface EngineLogger {
  info(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface EngineOptions {
  readonly db: Kysely<Database>;
  /** This process's id in `replicas` and on its leases; unique among live replicas. */
  readonly replicaId: string;
  /** Clock, epoch ms. Expiry and liveness compare replicas' clocks, so they should run NTP. */
  readonly now: () => number;
  readonly logger: EngineLogger;
  /** How long a quota lease lives without a heartbeat, ms. Default 30000. */
  readonly leaseTtlMs?: number;
  /** A seat is released when its instance has not checked for this long, ms. Default 60000. */
  readonly seatTtlMs?: number;
  /** Consumption, seat renewals and fail-open units are written this often, ms. Default 1000. */
  readonly settleIntervalMs?: number;
  /** The replica heartbeats (and sweeps vanished replicas' leases) this often, ms. Default 5000. */
  readonly heartbeatIntervalMs?: number;
  /** A lease block is about this much of this replica's traffic, ms. Default 1000. */
  readonly targetLeaseMs?: number;
  /** Smallest block leased ahead of demand, units. Default 1. */
  readonly minBlock?: number;
  /** Largest block, units: bounds what a rate spike can make one replica hold. Default 50000. */
  readonly maxBlock?: number;
  /** An exhausted quota asks Postgres again for returned units at most this often, ms. Default 1000. */
  readonly exhaustedRecheckMs?: number;
  /** A quota with no consumption for this long returns its unused units, ms. Default leaseTtlMs / 2. */
  readonly idleReturnMs?: number;
  /**
   * Run the settle and heartbeat loops on timers after `start()`. Default true. Tests pass
   * false and drive `tick()` / `flush()` / `heartbeat()` against an injected clock.
   */
  readonly autoRun?: boolean;
  /** Called once per SQL statement the engine sends (BEGIN and COMMIT included). */
  readonly onStatement?: () => void;
}

export interface ResolvedEngineOptions {
  readonly db: Kysely<Database>;
  readonly replicaId: string;
  readonly now: () => number;
  readonly logger: EngineLogger;
  readonly leaseTtlMs: number;
  readonly seatTtlMs: number;
  readonly settleIntervalMs: number;
  readonly heartbeatIntervalMs: number;
  readonly targetLeaseMs: number;
  readonly minBlock: number;
  readonly maxBlock: number;
  readonly exhaustedRecheckMs: number;
  readonly idleReturnMs: number;
  readonly autoRun: boolean;
  readonly onStatement: (() => void) | undefined;
  /**
   * Local units stop being spent this long before the lease's known expiry, ms, so clock skew
   * between replicas cannot let a sweeper strand a lease that is still being spent.
   */
  readonly leaseSafetyMs: number;
  /** A replica is live until this long after its last heartbeat, ms (3 heartbeats). */
  readonly replicaTtlMs: number;
}

export function resolveEngineOptions(options: EngineOptions): ResolvedEngineOptions {
  if (options.replicaId.length === 0) throw new Error("replicaId must not be empty");
  const leaseTtlMs = positiveInteger("leaseTtlMs", options.leaseTtlMs ?? 30_000);
  const heartbeatIntervalMs = positiveInteger("heartbeatIntervalMs", options.heartbeatIntervalMs ?? 5_000);
  const replicaTtlMs = 3 * heartbeatIntervalMs;
  if (leaseTtlMs <= replicaTtlMs) {
    // A lease must outlive its replica's liveness, or a replica that merely missed two
    // heartbeats could see its leases stranded while it still spends them.
    throw new Error(`leaseTtlMs (${leaseTtlMs}) must exceed 3 × heartbeatIntervalMs (${replicaTtlMs})`);
  }
  const minBlock = positiveInteger("minBlock", options.minBlock ?? 1);
  const maxBlock = positiveInteger("maxBlock", options.maxBlock ?? 50_000);
  if (maxBlock < minBlock) throw new Error(`maxBlock (${maxBlock}) must be at least minBlock (${minBlock})`);
  return Object.freeze({
    db: options.db,
    replicaId: options.replicaId,
    now: options.now,
    logger: options.logger,
    leaseTtlMs,
    seatTtlMs: positiveInteger("seatTtlMs", options.seatTtlMs ?? 60_000),
    settleIntervalMs: positiveInteger("settleIntervalMs", options.settleIntervalMs ?? 1_000),
    heartbeatIntervalMs,
    targetLeaseMs: positiveInteger("targetLeaseMs", options.targetLeaseMs ?? 1_000),
    minBlock,
    maxBlock,
    exhaustedRecheckMs: positiveInteger("exhaustedRecheckMs", options.exhaustedRecheckMs ?? 1_000),
    idleReturnMs: positiveInteger("idleReturnMs", options.idleReturnMs ?? Math.floor(leaseTtlMs / 2)),
    autoRun: options.autoRun ?? true,
    onStatement: options.onStatement,
    // Room for one missed heartbeat plus skew: heartbeats leave leaseTtl - interval ahead.
    leaseSafetyMs: Math.min(leaseTtlMs - replicaTtlMs, Math.max(heartbeatIntervalMs, Math.floor(leaseTtlMs / 3))),
    replicaTtlMs,
  });
}

function positiveInteger(name: string, value: number): number {
  if (!Number.isSafeInteger(value) || value <= 0) {
    throw new Error(`${name} must be a positive integer, got ${String(value)}`);
  }
  return value;
}

/** Counters for metrics; every field only grows, except the `...Pending` and `liveReplicas` gauges. */
export interface EngineStats {
  /** Lease round trips that granted at least one unit. */
  readonly leasesTaken: number;
  readonly unitsLeased: number;
  /** Units settled into `used` from leases. */
  readonly unitsSettled: number;
  /** Unused lease units given back (idle, period change, lease expiry, stop). */
  readonly unitsReturned: number;
  readonly overageSettled: number;
  /** refillQuota calls that had to wait on Postgres (no local units). */
  readonly refillsWaited: number;
  /** Refills started in the background before local units ran out. */
  readonly refillsPrewarmed: number;
  /** SQL statements sent, BEGIN and COMMIT included. */
  readonly statements: number;
  /** Units whose lease expired locally before they were spent (Postgres unreachable too long). */
  readonly unitsForfeited: number;
  /** Units this replica's sweeper moved from vanished replicas' leases into `stranded`. */
  readonly unitsStranded: number;
  /** Units allowed by quota commits beyond the lease units held (recorded as overage). */
  readonly unitsUnleased: number;
  readonly failOpenUnitsPending: number;
  readonly failOpenUnitsSettled: number;
  readonly seatAcquisitions: number;
  readonly seatsDenied: number;
  readonly seatRenewals: number;
  /** Seats found gone (expired and taken) when their renewal was written. */
  readonly seatsLost: number;
  /** Background passes (settle, heartbeat, pre-warm) that failed. */
  readonly backgroundFailures: number;
  /** Live replicas at the last heartbeat, this one included. */
  readonly liveReplicas: number;
}

export type MutableEngineStats = { -readonly [K in keyof EngineStats]: EngineStats[K] };

export function emptyStats(): MutableEngineStats {
  return {
    leasesTaken: 0,
    unitsLeased: 0,
    unitsSettled: 0,
    unitsReturned: 0,
    overageSettled: 0,
    refillsWaited: 0,
    refillsPrewarmed: 0,
    statements: 0,
    unitsForfeited: 0,
    unitsStranded: 0,
    unitsUnleased: 0,
    failOpenUnitsPending: 0,
    failOpenUnitsSettled: 0,
    seatAcquisitions: 0,
    seatsDenied: 0,
    seatRenewals: 0,
    seatsLost: 0,
    backgroundFailures: 0,
    liveReplicas: 1,
  };
}
