/**
 * Rate limits: one token bucket per (licence, feature) on each replica, holding that replica's
 * share of the cluster's limit and burst (divided by the live replicas at the last heartbeat).
 * Tokens refill lazily from the clock when the bucket is read; there is no timer per bucket.
 *
 * The split is approximate by design (a replica that receives more than its share of the
 * traffic denies earlier than the cluster limit would); it costs no Postgres round trip.
 */
import type { RateView } from "../counters.js";
import type { EntitlementRule } from "../snapshot.js";
import { ByLicenseFeature } from "./keyed.js";
import { rateWindowSeconds } from "./period.js";

/**
 * One bucket; it is the `RateView` the engine returns: a live object, to be read at once and
 * not kept.
 */
export class RateBucket implements RateView {
  tokens: number;
  capacity = 0;
  refillPerSecond = 0;
  /** The rule and live-replica count the share was computed for. */
  rule: EntitlementRule | undefined = undefined;
  live = 0;
  /** Tokens are current as of this instant, epoch ms. */
  updatedMs: number;

  constructor(
    readonly licenseId: string,
    readonly feature: string,
    nowMs: number,
  ) {
    this.tokens = Number.POSITIVE_INFINITY; // clamped to the capacity by the first refresh: a new bucket is full
    this.updatedMs = nowMs;
  }
}

export interface RateBuckets {
  view(licenseId: string, rule: EntitlementRule, nowMs: number): RateView;
  /** Takes `quantity` tokens (the decision already checked they were there). */
  commit(licenseId: string, rule: EntitlementRule, quantity: number, nowMs: number): void;
  /** Drops buckets that have been full for a while (a new bucket starts full: same answer). */
  prune(nowMs: number): void;
}

export function createRateBuckets(liveReplicas: () => number): RateBuckets {
  const buckets = new ByLicenseFeature<RateBucket>();

  function bucketFor(licenseId: string, rule: EntitlementRule, nowMs: number): RateBucket {
    let bucket = buckets.get(licenseId, rule.feature);
    if (bucket === undefined) {
      bucket = new RateBucket(licenseId, rule.feature, nowMs);
      buckets.set(licenseId, rule.feature, bucket);
    }
    refresh(bucket, rule, liveReplicas(), nowMs);
    return bucket;
  }

  function view(licenseId: string, rule: EntitlementRule, nowMs: number): RateView {
    return bucketFor(licenseId, rule, nowMs);
  }

  function commit(licenseId: string, rule: EntitlementRule, quantity: number, nowMs: number): void {
    const bucket = bucketFor(licenseId, rule, nowMs);
    bucket.tokens -= quantity;
  }

  function prune(nowMs: number): void {
    for (const bucket of [...buckets.values()]) {
      if (bucket.tokens + tokensSince(bucket, nowMs) >= bucket.capacity) buckets.delete(bucket.licenseId, bucket.feature);
    }
  }

  return { view, commit, prune };
}

/** Recomputes the share when the rule or the live count changed, then adds the tokens earned. */
function refresh(bucket: RateBucket, rule: EntitlementRule, live: number, nowMs: number): void {
  if (bucket.rule !== rule || bucket.live !== live) {
    const windowSeconds = rateWindowSeconds(rule.period) ?? 1;
    const limit = rule.limit ?? 0;
    bucket.capacity = (rule.burst ?? limit) / live;
    bucket.refillPerSecond = limit / windowSeconds / live;
    bucket.rule = rule;
    bucket.live = live;
  }
  bucket.tokens = Math.min(bucket.capacity, bucket.tokens + tokensSince(bucket, nowMs));
  if (nowMs > bucket.updatedMs) bucket.updatedMs = nowMs;
}

/** Tokens earned since the bucket was last current; none when the clock went backwards. */
function tokensSince(bucket: RateBucket, nowMs: number): number {
  return nowMs > bucket.updatedMs ? ((nowMs - bucket.updatedMs) * bucket.refillPerSecond) / 1000 : 0;
}
