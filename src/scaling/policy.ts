/**
 * The scaling policy and the pure decision of one Scale: (policy, state, intent, now) →
 * granted units, outcome, next change time, projected cost. No I/O, no clock.
 *
 * Order of the decision (docs/scaling.md):
 * 1. The target: `desired_units` as asked; or from observed utilization, target tracking
 *    (desired = ceil(in_use / target_utilization), as Kubernetes' HPA) or, in threshold mode,
 *    one step up above `scale_up_threshold` and one step down below `scale_down_threshold`.
 * 2. Step rounding: a change is a whole number of steps from the units held, rounded up for
 *    growth (never less than asked for) and down for shrinking (never shrink below the need).
 * 3. Clamp to [min, max] (CAPPED_AT_MAX / HELD_AT_MIN when the clamp bit). The clamp wins over
 *    step alignment: max and min are hard bounds.
 * 4. Cooldown of the direction, counted from the last change in either direction (COOLDOWN).
 * 5. Budget, growth only: the period's projected cost (cost so far + granted units held to the
 *    period's end) must stay ≤ budget_per_period; otherwise the most whole steps that fit are
 *    granted, never fewer units than held (BUDGET_EXCEEDED). Shrinking is never refused.
 */
import type { ScalingRule } from "../rules/types.js";
import { AUTO_SCALING_DEFAULTS, SCALING_DEFAULTS } from "../rules/types.js";
import { amountForUnitMs, maxUnitMsWithin } from "./money.js";

export const SCALE_OUTCOMES = [
  "SCALED_UP", "SCALED_DOWN", "UNCHANGED", "CAPPED_AT_MAX", "HELD_AT_MIN", "COOLDOWN", "BUDGET_EXCEEDED",
] as const;
export type ScaleOutcomeName = (typeof SCALE_OUTCOMES)[number];

/** Ratios are held as parts per million, so comparisons are exact integer arithmetic. */
const PPM = 1_000_000n;

export type UtilizationMode =
  | { readonly kind: "target"; readonly targetPpm: bigint }
  | { readonly kind: "thresholds"; readonly upPpm: bigint; readonly downPpm: bigint };

export interface AutoPolicy {
  readonly source: "utilization" | "quota";
  /** source "quota": the quota feature whose forecast drives this capacity. */
  readonly quotaFeature: string | null;
  readonly horizonMs: number;
}

/** A capacity entitlement's policy with every default filled in. */
export interface ScalingPolicy {
  readonly min: number;
  readonly max: number;
  readonly step: number;
  readonly mode: UtilizationMode;
  readonly upCooldownMs: number;
  readonly downCooldownMs: number;
  /** Minor currency units per billing period; null: unbounded. */
  readonly budgetPerPeriod: bigint | null;
  /** Minor currency units per unit-hour; 0 when the entitlement has no price. */
  readonly unitPrice: bigint;
  readonly auto: AutoPolicy | null;
}

/**
 * The policy of a capacity entitlement (`limit` and `unit_price` from the entitlement). Without
 * a declared `scaling` the capacity is fixed at `limit` (min = max = limit): Scale answers
 * CAPPED_AT_MAX / HELD_AT_MIN rather than inventing bounds.
 */
export function resolvePolicy(limit: number, unitPrice: number | null, scaling: ScalingRule | undefined): ScalingPolicy {
  const s = scaling ?? { min: limit, max: limit };
  return {
    min: s.min,
    max: s.max,
    step: Math.max(1, s.step ?? SCALING_DEFAULTS.step),
    mode: utilizationMode(s),
    upCooldownMs: (s.scale_up_cooldown_seconds ?? SCALING_DEFAULTS.scale_up_cooldown_seconds) * 1000,
    downCooldownMs: (s.scale_down_cooldown_seconds ?? SCALING_DEFAULTS.scale_down_cooldown_seconds) * 1000,
    budgetPerPeriod: s.budget_per_period === undefined ? null : BigInt(s.budget_per_period),
    unitPrice: BigInt(unitPrice ?? 0),
    auto:
      s.auto === undefined
        ? null
        : {
            source: s.auto.source,
            quotaFeature: s.auto.quota_feature ?? null,
            horizonMs: (s.auto.horizon_seconds ?? AUTO_SCALING_DEFAULTS.horizon_seconds) * 1000,
          },
  };
}

function utilizationMode(s: ScalingRule): UtilizationMode {
  if (s.scale_up_threshold !== undefined && s.scale_down_threshold !== undefined) {
    return { kind: "thresholds", upPpm: toPpm(s.scale_up_threshold), downPpm: toPpm(s.scale_down_threshold) };
  }
  return { kind: "target", targetPpm: toPpm(s.target_utilization ?? SCALING_DEFAULTS.target_utilization) };
}

/** A ratio in [0, 1] as parts per million (0.8 → 800 000), at least 1 for a positive ratio. */
function toPpm(ratio: number): bigint {
  const ppm = BigInt(Math.round(ratio * 1_000_000));
  return ratio > 0 && ppm === 0n ? 1n : ppm;
}

/** What the units are now, and what the period has cost so far. */
export interface ScaleState {
  readonly units: number;
  /** The last change by Scale (epoch ms), or null when there was none. */
  readonly lastChangeAtMs: number | null;
  /** End of the current billing period (epoch ms, exclusive). */
  readonly periodEndMs: number;
  /** Unit-ms held from the period's start until now (the ledger's integral). */
  readonly periodUnitMsSoFar: bigint;
}

export type ScaleIntent =
  | { readonly kind: "desired"; readonly units: number }
  | { readonly kind: "observed"; readonly inUse: number; readonly capacity: number };

export interface ScaleDecision {
  readonly granted: number;
  readonly previous: number;
  readonly outcome: ScaleOutcomeName;
  /** The earliest time (epoch ms) another change may happen; ≥ now. */
  readonly nextChangeAtMs: number;
  /** The period's cost if `granted` is held to its end, minor units. */
  readonly projectedPeriodCost: bigint;
}

/** Decides one Scale. `nowMs` must be ≥ the state's last change and < periodEndMs. */
export function decideScale(policy: ScalingPolicy, state: ScaleState, intent: ScaleIntent, nowMs: number): ScaleDecision {
  const current = state.units;
  const stepped = stepRounded(current, targetUnits(policy, current, intent), policy.step);
  const clamped = Math.min(policy.max, Math.max(policy.min, stepped));
  const clampOutcome: ScaleOutcomeName | undefined =
    stepped > policy.max ? "CAPPED_AT_MAX" : stepped < policy.min ? "HELD_AT_MIN" : undefined;
  const result = (granted: number, outcome: ScaleOutcomeName, nextChangeAtMs: number): ScaleDecision => ({
    granted,
    previous: current,
    outcome,
    nextChangeAtMs: Math.max(nowMs, nextChangeAtMs),
    projectedPeriodCost: projectedCost(policy, state, granted, nowMs),
  });
  const anyCooldownMs = Math.min(policy.upCooldownMs, policy.downCooldownMs);
  const idleNext = state.lastChangeAtMs === null ? nowMs : state.lastChangeAtMs + anyCooldownMs;
  if (clamped === current) return result(current, clampOutcome ?? "UNCHANGED", idleNext);

  const growing = clamped > current;
  const cooldownMs = growing ? policy.upCooldownMs : policy.downCooldownMs;
  if (state.lastChangeAtMs !== null && nowMs < state.lastChangeAtMs + cooldownMs) {
    return result(current, "COOLDOWN", state.lastChangeAtMs + cooldownMs);
  }
  const changedNext = nowMs + anyCooldownMs;
  if (growing) {
    const fit = mostUnitsWithinBudget(policy, state, nowMs);
    if (fit !== undefined && clamped > fit) {
      // Whole steps from what is held, and never fewer units than held.
      const steps = Math.floor((fit - current) / policy.step);
      const granted = steps > 0 ? current + steps * policy.step : current;
      return result(granted, "BUDGET_EXCEEDED", granted === current ? idleNext : changedNext);
    }
  }
  return result(clamped, clampOutcome ?? (growing ? "SCALED_UP" : "SCALED_DOWN"), changedNext);
}

/** The units the intent asks for, before step rounding and clamping. */
export function targetUnits(policy: ScalingPolicy, current: number, intent: ScaleIntent): number {
  if (intent.kind === "desired") return intent.units;
  const inUse = BigInt(intent.inUse);
  const mode = policy.mode;
  if (mode.kind === "target") {
    // ceil(in_use / target) with target = targetPpm / 1e6, exactly.
    return Number(ceilDiv(inUse * PPM, mode.targetPpm));
  }
  const capacity = BigInt(intent.capacity > 0 ? intent.capacity : current);
  if (capacity === 0n) return intent.inUse > 0 ? current + policy.step : current;
  // utilization > up ⇔ in_use·1e6 > up_ppm·capacity (exact).
  if (inUse * PPM > mode.upPpm * capacity) return current + policy.step;
  if (inUse * PPM < mode.downPpm * capacity) return current - policy.step;
  return current;
}

/** A whole number of steps from `current`: up for growth, down for shrinking. */
export function stepRounded(current: number, target: number, step: number): number {
  if (target > current) return current + Math.ceil((target - current) / step) * step;
  if (target < current) return current - Math.floor((current - target) / step) * step;
  return current;
}

/** The most units that keep the period's projected cost within budget; undefined: no limit. */
export function mostUnitsWithinBudget(policy: ScalingPolicy, state: ScaleState, nowMs: number): number | undefined {
  if (policy.budgetPerPeriod === null) return undefined;
  const allowed = maxUnitMsWithin(policy.budgetPerPeriod, policy.unitPrice);
  if (allowed === undefined) return undefined;
  const leftMs = BigInt(Math.max(0, state.periodEndMs - nowMs));
  const room = allowed - state.periodUnitMsSoFar;
  if (room < 0n) return -1;
  if (leftMs === 0n) return undefined;
  const units = room / leftMs;
  return units > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(units);
}

/** Cost so far plus `units` held from now to the period's end, rounded once. */
export function projectedCost(policy: ScalingPolicy, state: ScaleState, units: number, nowMs: number): bigint {
  const leftMs = BigInt(Math.max(0, state.periodEndMs - nowMs));
  return amountForUnitMs(state.periodUnitMsSoFar + BigInt(units) * leftMs, policy.unitPrice);
}

function ceilDiv(a: bigint, b: bigint): bigint {
  return (a + b - 1n) / b;
}
