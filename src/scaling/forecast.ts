/**
 * Forecast: an exponentially weighted consumption rate per (licence, feature), and when the
 * remaining units run out at that rate (depletes_at).
 *
 * The rate is a decaying sum: every event adds its units to S, and S halves every `halfLifeMs`.
 * For a steady rate r (units/ms), S settles at r·H/ln 2, so r = S·ln 2 / H. Early on (less
 * than a few half-lives since the first event) S has not settled; dividing by the settled
 * fraction 1 − 2^(−E/H) (E = time since the first event, at least `minWindowMs`) removes that
 * bias, so a new key is not under-estimated. O(1) per event, no allocation for known keys.
 *
 * Quotas are fed the units Check commits (the engine hook) — this replica's consumption;
 * `clusterFactor` scales it to the cluster (the live replicas, when load is balanced).
 * Capacities are fed utilization reports (Scale's `observed`, KEDA): the rate is the growth of
 * `in_use` (negative when demand falls), and what remains is capacity − in_use.
 */
import { ByLicenseFeature } from "../licensing/engine/keyed.js";

const LN2 = Math.LN2;

/** One key's estimator state. Mutable, owned by the tracker. */
export interface RateState {
  /** Decayed sum of units, as of `atMs`. */
  sum: number;
  atMs: number;
  firstMs: number;
}

/** A fresh estimator with one event of `units` at `nowMs`. */
export function startRate(units: number, nowMs: number): RateState {
  return { sum: units, atMs: nowMs, firstMs: nowMs };
}

/** Adds an event of `units` at `nowMs` (≥ the last event; earlier events count as at atMs). */
export function addToRate(state: RateState, units: number, nowMs: number, halfLifeMs: number): void {
  if (nowMs > state.atMs) {
    state.sum *= 2 ** (-(nowMs - state.atMs) / halfLifeMs);
    state.atMs = nowMs;
  }
  state.sum += units;
}

/** The rate at `nowMs`, in units per millisecond (may be negative for utilization growth). */
export function rateAt(state: RateState, nowMs: number, halfLifeMs: number, minWindowMs: number): number {
  const decayed = state.sum * 2 ** (-Math.max(0, nowMs - state.atMs) / halfLifeMs);
  const windowMs = Math.max(minWindowMs, nowMs - state.firstMs);
  const settled = 1 - 2 ** (-windowMs / halfLifeMs);
  return (decayed * LN2) / (halfLifeMs * settled);
}

/** now + remaining / rate, when the rate is positive and something remains; else undefined. */
export function depletesAtMs(remaining: number, ratePerMs: number, nowMs: number): number | undefined {
  if (!(ratePerMs > 0) || remaining < 0) return undefined;
  return nowMs + Math.ceil(remaining / ratePerMs);
}

export interface ForecastOptions {
  /** Half-life of the weighting, ms: the rate forgets older consumption at this pace. */
  readonly halfLifeMs: number;
  /** Shortest window a rate is computed over, ms (so one event is not an infinite rate). Default halfLifeMs / 4. */
  readonly minWindowMs?: number;
  /** Most keys tracked; beyond it the least recently updated key is dropped (counted). Default 100 000. */
  readonly maxKeys?: number;
  /** Multiplies quota rates measured on this replica into cluster rates (e.g. live replicas). Default 1. */
  readonly clusterFactor?: () => number;
}

/** A capacity's last reported utilization. */
export interface UtilizationReport {
  readonly inUse: number;
  readonly capacity: number;
  readonly atMs: number;
}

export interface ForecastStats {
  readonly keys: number;
  /** Keys dropped because maxKeys was reached. */
  readonly evicted: number;
}

export interface Forecast {
  /**
   * A quota's units committed by Check (hot path: synchronous, no allocation for known keys).
   * `remaining`: the quota's units left cluster-wide after it, when known (for auto mode).
   */
  recordConsumption(licenseId: string, feature: string, units: number, nowMs: number, remaining?: number): void;
  /** A capacity's reported utilization (Scale's observed, a KEDA poll). */
  recordUtilization(licenseId: string, feature: string, inUse: number, capacity: number, nowMs: number): void;
  /** Units per second now (quotas: scaled to the cluster), or undefined when nothing was recorded. */
  ratePerSecond(licenseId: string, feature: string, nowMs: number): number | undefined;
  /** When `remaining` units run out at the current rate (epoch ms); undefined when it does not. */
  depletesAt(licenseId: string, feature: string, remaining: number, nowMs: number): number | undefined;
  /** The quota's last known remaining units (from recordConsumption). */
  lastRemaining(licenseId: string, feature: string): number | undefined;
  lastUtilization(licenseId: string, feature: string): UtilizationReport | undefined;
  stats(): ForecastStats;
}

interface Entry extends RateState {
  kind: "quota" | "capacity";
  remaining: number | undefined;
  utilization: UtilizationReport | undefined;
  licenseId: string;
  feature: string;
}

export function createForecast(options: ForecastOptions): Forecast {
  const halfLifeMs = options.halfLifeMs;
  if (!(halfLifeMs > 0)) throw new Error(`forecast halfLifeMs: must be > 0 (got ${halfLifeMs})`);
  const minWindowMs = options.minWindowMs ?? halfLifeMs / 4;
  const maxKeys = options.maxKeys ?? 100_000;
  const clusterFactor = options.clusterFactor ?? (() => 1);
  const entries = new ByLicenseFeature<Entry>();
  // Insertion order of a Map = least recently (re)inserted first: entries are re-inserted on
  // update only when the map is full, so eviction is cheap and roughly LRU.
  const order = new Map<Entry, true>();
  let evicted = 0;

  function create(licenseId: string, feature: string, kind: Entry["kind"], units: number, nowMs: number): Entry {
    if (order.size >= maxKeys) evictOldest();
    const entry: Entry = { ...startRate(units, nowMs), kind, remaining: undefined, utilization: undefined, licenseId, feature };
    entries.set(licenseId, feature, entry);
    order.set(entry, true);
    return entry;
  }

  function evictOldest(): void {
    const oldest = order.keys().next();
    if (oldest.done === true) return;
    order.delete(oldest.value);
    entries.delete(oldest.value.licenseId, oldest.value.feature);
    evicted += 1;
  }

  function touch(entry: Entry): void {
    if (order.size < maxKeys) return;
    order.delete(entry);
    order.set(entry, true);
  }

  function rate(entry: Entry, nowMs: number): number {
    const perMs = rateAt(entry, nowMs, halfLifeMs, minWindowMs);
    return entry.kind === "quota" ? perMs * clusterFactor() : perMs;
  }

  return {
    recordConsumption(licenseId, feature, units, nowMs, remaining) {
      let entry = entries.get(licenseId, feature);
      if (entry === undefined) entry = create(licenseId, feature, "quota", units, nowMs);
      else {
        addToRate(entry, units, nowMs, halfLifeMs);
        touch(entry);
      }
      if (remaining !== undefined) entry.remaining = remaining;
    },
    recordUtilization(licenseId, feature, inUse, capacity, nowMs) {
      const report = { inUse, capacity, atMs: nowMs };
      const entry = entries.get(licenseId, feature);
      if (entry === undefined) {
        // The first report has no growth to measure; it only sets the baseline.
        create(licenseId, feature, "capacity", 0, nowMs).utilization = report;
        return;
      }
      addToRate(entry, inUse - (entry.utilization?.inUse ?? inUse), nowMs, halfLifeMs);
      entry.utilization = report;
      touch(entry);
    },
    ratePerSecond(licenseId, feature, nowMs) {
      const entry = entries.get(licenseId, feature);
      return entry === undefined ? undefined : rate(entry, nowMs) * 1000;
    },
    depletesAt(licenseId, feature, remaining, nowMs) {
      const entry = entries.get(licenseId, feature);
      return entry === undefined ? undefined : depletesAtMs(remaining, rate(entry, nowMs), nowMs);
    },
    lastRemaining: (licenseId, feature) => entries.get(licenseId, feature)?.remaining,
    lastUtilization: (licenseId, feature) => entries.get(licenseId, feature)?.utilization,
    stats: () => ({ keys: order.size, evicted }),
  };
}
