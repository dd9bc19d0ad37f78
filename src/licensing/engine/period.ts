/**
 * Quota periods in UTC. A period is the half-open interval [start, end): a Check at exactly
 * `end` belongs to the next period. Lifetime quotas have one period starting at the epoch and
 * never ending.
 */
import type { EntitlementPeriod } from "../../store/schema.js";

const SECOND_MS = 1000;
const MINUTE_MS = 60 * SECOND_MS;
const HOUR_MS = 60 * MINUTE_MS;
const DAY_MS = 24 * HOUR_MS;

/** period_start of lifetime quotas: 1970-01-01T00:00:00Z. */
export const LIFETIME_START_MS = 0;

/**
 * Start (epoch ms, UTC) of the period containing `nowMs`. A null period is treated as lifetime,
 * so a quota without a period counts once, forever, rather than never.
 */
export function periodStartMs(period: EntitlementPeriod | null, nowMs: number): number {
  switch (period) {
    case "second":
      return floorTo(nowMs, SECOND_MS);
    case "minute":
      return floorTo(nowMs, MINUTE_MS);
    case "hour":
      return floorTo(nowMs, HOUR_MS);
    case "day":
      return floorTo(nowMs, DAY_MS);
    case "month": {
      const date = new Date(nowMs);
      return Date.UTC(date.getUTCFullYear(), date.getUTCMonth(), 1);
    }
    case "lifetime":
    case null:
      return LIFETIME_START_MS;
  }
}

/**
 * Start of the period after the one starting at `startMs` (epoch ms), or null for lifetime.
 * Months have their calendar length (28 to 31 days); UTC has no daylight saving shifts.
 */
export function periodEndMs(period: EntitlementPeriod | null, startMs: number): number | null {
  switch (period) {
    case "second":
      return startMs + SECOND_MS;
    case "minute":
      return startMs + MINUTE_MS;
    case "hour":
      return startMs + HOUR_MS;
    case "day":
      return startMs + DAY_MS;
    case "month": {
      const date = new Date(startMs);
      return Date.UTC(date.getUTCFullYear(), date.getUTCMonth() + 1, 1);
    }
    case "lifetime":
    case null:
      return null;
  }
}

/**
 * Length of a rate window in seconds. The rules allow rate limits per second or minute; hour
 * and day work the same way; month, lifetime and null have no fixed length and give null.
 */
export function rateWindowSeconds(period: EntitlementPeriod | null): number | null {
  switch (period) {
    case "second":
      return 1;
    case "minute":
      return MINUTE_MS / SECOND_MS;
    case "hour":
      return HOUR_MS / SECOND_MS;
    case "day":
      return DAY_MS / SECOND_MS;
    default:
      return null;
  }
}

/** Floors toward the past, also for instants before the epoch. */
function floorTo(ms: number, unitMs: number): number {
  return Math.floor(ms / unitMs) * unitMs;
}
