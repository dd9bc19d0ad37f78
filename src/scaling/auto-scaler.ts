/**
 * Auto mode: capacity entitlements whose policy declares `auto` scale themselves, with no
 * caller, every `intervalMs` (on the injected clock; `tick()` runs one pass for tests).
 *
 * - source "utilization": target tracking (or thresholds) from the last utilization reported
 *   through Scale, and one step more when the forecast growth of demand would use up the
 *   units within the horizon. Reports older than `staleAfterMs` are ignored.
 * - source "quota": one step up when the linked quota's forecast (its rate and the remaining
 *   units the Check hook reported) says it runs out within the horizon. Never scales down.
 *
 * Every change goes through the same transaction as an RPC Scale (policy, cooldowns, budget,
 * ledger, NOTIFY), with caller "auto". A scale-up ahead of exhaustion is logged and counted.
 * A pass never throws: a failure is logged and counted, and the next pass retries.
 */
import type { Kysely } from "kysely";
import { describe } from "../licensing/engine/background.js";
import type { Database } from "../store/schema.js";
import type { CapacityScaler, ScalingLogger } from "./capacity-scaler.js";
import { listAutoCapacities, pruneStoredAnswers, readCapacityUnits } from "./capacity-store.js";
import type { Forecast } from "./forecast.js";
import { targetUnits, type ScalingPolicy } from "./policy.js";

export const AUTO_SCALER_LIMITS = { minIntervalMs: 1_000, maxIntervalMs: 3_600_000 } as const;

export interface AutoScalerOptions {
  readonly db: Kysely<Database>;
  readonly scaler: CapacityScaler;
  readonly forecast: Forecast;
  /** Epoch ms. */
  readonly now: () => number;
  readonly logger: ScalingLogger;
  /** Between passes, ms; 1 000 to 3 600 000. */
  readonly intervalMs: number;
  /** Utilization reports older than this are not acted on, ms. Default 5 × intervalMs. */
  readonly staleAfterMs?: number;
  /** Scale's stored answers (request_id replays) are kept this long, ms. Default 7 days. */
  readonly requestRetentionMs?: number;
}

export interface AutoScalerStats {
  readonly passes: number;
  /** Auto entitlements looked at, summed over passes. */
  readonly evaluated: number;
  readonly scaledUp: number;
  readonly scaledDown: number;
  /** Scale-ups made because a forecast said the units run out within the horizon. */
  readonly aheadOfExhaustion: number;
  /** Passes or entitlements that failed (logged). */
  readonly failures: number;
}

export interface AutoScaler {
  /** One pass over every auto entitlement; resolves when done. Never rejects. */
  tick(): Promise<void>;
  /** Runs `tick` every intervalMs (never overlapping), until stop(). */
  start(): void;
  /** Stops the timer and waits for a pass under way. */
  stop(): Promise<void>;
  stats(): AutoScalerStats;
}

const DEFAULT_RETENTION_MS = 7 * 24 * 3600 * 1000;

export function createAutoScaler(options: AutoScalerOptions): AutoScaler {
  const { intervalMs } = options;
  if (!(intervalMs >= AUTO_SCALER_LIMITS.minIntervalMs && intervalMs <= AUTO_SCALER_LIMITS.maxIntervalMs)) {
    throw new Error(`auto-scaler intervalMs: must be ${AUTO_SCALER_LIMITS.minIntervalMs}..${AUTO_SCALER_LIMITS.maxIntervalMs} (got ${intervalMs})`);
  }
  const staleAfterMs = options.staleAfterMs ?? 5 * intervalMs;
  const retentionMs = options.requestRetentionMs ?? DEFAULT_RETENTION_MS;
  const stats = { passes: 0, evaluated: 0, scaledUp: 0, scaledDown: 0, aheadOfExhaustion: 0, failures: 0 };
  let running: Promise<void> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;

  function tick(): Promise<void> {
    running ??= pass().finally(() => {
      running = undefined;
    });
    return running;
  }

  async function pass(): Promise<void> {
    stats.passes += 1;
    try {
      const nowMs = options.now();
      await pruneStoredAnswers(options.db, nowMs - retentionMs);
      for (const { licenseId, feature } of await listAutoCapacities(options.db)) {
        stats.evaluated += 1;
        await evaluate(licenseId, feature).catch((err: unknown) => {
          stats.failures += 1;
          options.logger.warn({ licenseId, feature, err: describe(err) }, "auto scaling failed for an entitlement");
        });
      }
    } catch (err) {
      stats.failures += 1;
      options.logger.warn({ err: describe(err) }, "auto scaling pass failed; retrying next interval");
    }
  }

  async function evaluate(licenseId: string, feature: string): Promise<void> {
    const found = await options.scaler.policyOf(licenseId, feature);
    const auto = found?.policy.auto;
    if (found === undefined || auto === undefined || auto === null) return;
    const nowMs = options.now();
    const current = (await readCapacityUnits(options.db, licenseId)).get(feature) ?? found.entitlement.limit;
    const plan = auto.source === "quota"
      ? fromQuota(licenseId, auto.quotaFeature ?? "", found.policy, current, nowMs)
      : fromUtilization(licenseId, feature, found.policy, current, nowMs);
    if (plan === undefined || plan.units === current) return;
    const result = await options.scaler.scale({
      licenseId,
      feature,
      intent: { kind: "desired", units: plan.units },
      requestId: "",
      reason: plan.reason,
      caller: "auto",
    });
    if (result.grantedUnits > result.previousUnits) stats.scaledUp += 1;
    if (result.grantedUnits < result.previousUnits) stats.scaledDown += 1;
    if (plan.depletesAtMs !== undefined && result.grantedUnits > result.previousUnits) {
      stats.aheadOfExhaustion += 1;
      options.logger.info(
        {
          licenseId, feature, from: result.previousUnits, to: result.grantedUnits, outcome: result.outcome,
          depletesAt: new Date(plan.depletesAtMs).toISOString(), horizonSeconds: auto.horizonMs / 1000,
        },
        "capacity scaled up ahead of forecast exhaustion",
      );
    }
  }

  interface Plan {
    readonly units: number;
    readonly reason: string;
    /** Set when the plan grows because of a forecast depletion within the horizon. */
    readonly depletesAtMs?: number;
  }

  function fromUtilization(licenseId: string, feature: string, policy: ScalingPolicy, current: number, nowMs: number): Plan | undefined {
    const report = options.forecast.lastUtilization(licenseId, feature);
    if (report === undefined || nowMs - report.atMs > staleAfterMs) return undefined;
    const tracked = targetUnits(policy, current, { kind: "observed", inUse: report.inUse, capacity: report.capacity });
    const depletesAtMs = options.forecast.depletesAt(licenseId, feature, current - report.inUse, nowMs);
    if (depletesAtMs !== undefined && depletesAtMs - nowMs <= (policy.auto?.horizonMs ?? 0)) {
      return { units: Math.max(tracked, current + policy.step), reason: "auto: demand forecast", depletesAtMs };
    }
    return { units: tracked, reason: "auto: utilization" };
  }

  function fromQuota(licenseId: string, quotaFeature: string, policy: ScalingPolicy, current: number, nowMs: number): Plan | undefined {
    const remaining = options.forecast.lastRemaining(licenseId, quotaFeature);
    if (remaining === undefined) return undefined;
    const depletesAtMs = options.forecast.depletesAt(licenseId, quotaFeature, remaining, nowMs);
    if (depletesAtMs === undefined || depletesAtMs - nowMs > (policy.auto?.horizonMs ?? 0)) return undefined;
    return { units: current + policy.step, reason: `auto: quota ${quotaFeature} forecast`, depletesAtMs };
  }

  return {
    tick,
    start() {
      if (timer !== undefined || stopped) return;
      const schedule = (): void => {
        timer = setTimeout(() => {
          void tick().finally(() => {
            if (!stopped) schedule();
          });
        }, intervalMs);
        timer.unref();
      };
      schedule();
    },
    async stop() {
      stopped = true;
      if (timer !== undefined) clearTimeout(timer);
      timer = undefined;
      await running;
    },
    stats: () => ({ ...stats }),
  };
}
