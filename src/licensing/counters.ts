/**
 * The seam between the pure decision and the counting engine (quota leases, rate buckets,
 * seat leases).
 *
 * `decide()` reads counters through `CounterReader` (reads consume nothing, though the engine
 * may do bookkeeping such as period rollover) and returns what it would consume; the Check handler then `commit`s that consumption (memory only, synchronous),
 * or, when decide() says a limit needs Postgres (a quota lease ran dry, a seat is not held yet),
 * awaits `refillQuota` / `acquireSeat` and decides again. In steady state nothing awaits.
 */
import type { EntitlementRule } from "./snapshot.js";

/**
 * Where one quota stands, seen from this replica. Views may be live objects reused by the
 * engine (the hot path allocates nothing): read them at once, never keep them. `exhausted`
 * may be true while `localAvailable` > 0: local units are spent first.
 */
export interface QuotaView {
  /** Units this replica may spend now from its lease, without asking Postgres. */
  readonly localAvailable: number;
  /**
   * Best known units left cluster-wide for the period after what this replica holds is spent
   * or not: limit - used - leased(others) - stranded, refreshed at each lease round trip. For
   * the response's `remaining`; never used to admit.
   */
  readonly remaining: number;
  /** Postgres said, this period, that no more units can be leased (until a return or reset). */
  readonly exhausted: boolean;
  /** Start of the next period (epoch ms); null for lifetime quotas. */
  readonly resetsAtMs: number | null;
}

/** One replica's token bucket for a rate entitlement (its share of the cluster's limit). */
export interface RateView {
  /** Tokens available now (may be fractional). */
  readonly tokens: number;
  /** Bucket size of this replica's share. */
  readonly capacity: number;
  /** Tokens added per second to this replica's share. */
  readonly refillPerSecond: number;
}

/** A seat or capacity entitlement, for one instance. */
export interface SeatView {
  /** This instance holds a live seat lease (known to this replica). */
  readonly held: boolean;
  /** Seats known in use cluster-wide at the last round trip (for `remaining`). */
  readonly inUse: number;
  /** When the earliest other lease expires (epoch ms), for retry_after; null if unknown. */
  readonly nextExpiryMs: number | null;
}

export interface CounterReader {
  quota(licenseId: string, rule: EntitlementRule, nowMs: number): QuotaView;
  rate(licenseId: string, rule: EntitlementRule, nowMs: number): RateView;
  seat(licenseId: string, rule: EntitlementRule, instanceId: string, nowMs: number): SeatView;
}

/**
 * What an allowed decision consumes; applied by `Counters.commit`. For quotas, `quantity` is
 * every unit the decision used and `overage` the part of it past the limit (allow_and_bill):
 * quantity - overage units come out of the lease.
 */
export type Consumption =
  | { readonly kind: "quota"; readonly rule: EntitlementRule; readonly quantity: number; readonly overage: number }
  | { readonly kind: "rate"; readonly rule: EntitlementRule; readonly quantity: number }
  | { readonly kind: "seat"; readonly rule: EntitlementRule; readonly instanceId: string };

export interface Counters extends CounterReader {
  /**
   * Applies an allowed decision's consumption in memory: spends lease units (and records
   * overage), takes rate tokens, renews seat leases. Synchronous; the engine settles with
   * Postgres in the background, in batches.
   */
  commit(licenseId: string, consumption: readonly Consumption[], nowMs: number): void;
  /**
   * Tries to make at least `quantity` units available locally with one atomic lease UPDATE
   * (never granting past the limit). Resolves the new view (exhausted when the cluster has
   * fewer than `quantity` left). Concurrent calls for one quota share one round trip. Rejects
   * when Postgres is unreachable.
   */
  refillQuota(licenseId: string, rule: EntitlementRule, quantity: number, nowMs: number): Promise<QuotaView>;
  /**
   * Tries to take a seat for `instanceId` (exact across replicas: at most `rule.limit` live
   * leases). Resolves the new view (held or not). Rejects when Postgres is unreachable.
   */
  acquireSeat(licenseId: string, rule: EntitlementRule, instanceId: string, nowMs: number): Promise<SeatView>;
  /**
   * Records units allowed while Postgres was unreachable (fail_open), to be settled into
   * `used` (and overage past the limit) when it is back. Never lost: kept in memory and
   * settled on shutdown when possible; counted and logged otherwise.
   */
  recordFailOpen(licenseId: string, rule: EntitlementRule, quantity: number, nowMs: number): void;
}
