/**
 * The pure Scale decision: every policy edge with plain objects and a fixed clock.
 */
import { describe, expect, test } from "vitest";
import { amountForUnitMs, maxUnitMsWithin } from "../../src/scaling/money.js";
import {
  decideScale,
  resolvePolicy,
  stepRounded,
  targetUnits,
  type ScaleIntent,
  type ScaleState,
  type ScalingPolicy,
} from "../../src/scaling/policy.js";
import type { ScalingRule } from "../../src/rules/types.js";

const NOW = Date.UTC(2026, 10, 15, 0, 0, 0); // 2026-11-15T00:00Z
const PERIOD_END = Date.UTC(2026, 11, 1); // 2026-12-01T00:00Z
const HOUR = 3_600_000;

function policy(scaling: Partial<ScalingRule> = {}, unitPrice: number | null = null): ScalingPolicy {
  return resolvePolicy(4, unitPrice, {
    min: 2,
    max: 16,
    scale_up_cooldown_seconds: 60,
    scale_down_cooldown_seconds: 300,
    ...scaling,
  });
}

function state(units: number, overrides: Partial<ScaleState> = {}): ScaleState {
  return { units, lastChangeAtMs: null, periodEndMs: PERIOD_END, periodUnitMsSoFar: 0n, ...overrides };
}

const desired = (units: number): ScaleIntent => ({ kind: "desired", units });
const observed = (inUse: number, capacity = 0): ScaleIntent => ({ kind: "observed", inUse, capacity });

describe("target: what the intent asks for", () => {
  test("target tracking asks ceil(in_use / target_utilization), exactly (no float drift)", () => {
    const p = policy({ target_utilization: 0.8 });
    expect(targetUnits(p, 4, observed(8))).toBe(10); // 8 / 0.8 = 10 exactly, not 10.000000000000002 → 11
    expect(targetUnits(p, 4, observed(9))).toBe(12); // 11.25 → 12
    expect(targetUnits(p, 4, observed(0))).toBe(0);
    expect(targetUnits(policy({ target_utilization: 0.7 }), 4, observed(7))).toBe(10);
    expect(targetUnits(policy(), 4, observed(8))).toBe(10); // default target 0.8
  });

  test("thresholds move one step: up above the up threshold, down below the down threshold, else hold", () => {
    const p = policy({ scale_up_threshold: 0.9, scale_down_threshold: 0.3, step: 2 });
    expect(targetUnits(p, 10, observed(10, 10))).toBe(12); // 100% > 90%
    expect(targetUnits(p, 10, observed(9, 10))).toBe(10); // exactly 90%: not above
    expect(targetUnits(p, 10, observed(2, 10))).toBe(8); // 20% < 30%
    expect(targetUnits(p, 10, observed(3, 10))).toBe(10); // exactly 30%: not below
    expect(targetUnits(p, 10, observed(10))).toBe(12); // capacity 0: measured against the units held
  });

  test("step rounding grows by whole steps rounding up and shrinks by whole steps rounding down", () => {
    expect(stepRounded(4, 5, 4)).toBe(8);
    expect(stepRounded(4, 8, 4)).toBe(8);
    expect(stepRounded(4, 9, 4)).toBe(12);
    expect(stepRounded(12, 9, 4)).toBe(12); // shrinking by 3 is less than a step: hold
    expect(stepRounded(12, 7, 4)).toBe(8);
    expect(stepRounded(12, 0, 5)).toBe(2);
  });
});

describe("decideScale", () => {
  test("a growth within bounds scales up, by whole steps, and reports the next change time", () => {
    const d = decideScale(policy({ step: 2 }), state(4), desired(7), NOW);
    expect(d).toMatchObject({ granted: 8, previous: 4, outcome: "SCALED_UP", nextChangeAtMs: NOW + 60_000 });
  });

  test("a shrink within bounds scales down", () => {
    expect(decideScale(policy(), state(8), desired(5), NOW)).toMatchObject({ granted: 5, outcome: "SCALED_DOWN" });
  });

  test("the same units is UNCHANGED", () => {
    expect(decideScale(policy(), state(8), desired(8), NOW)).toMatchObject({ granted: 8, outcome: "UNCHANGED", nextChangeAtMs: NOW });
  });

  test("above max is clamped to max: CAPPED_AT_MAX, also when already at max", () => {
    expect(decideScale(policy(), state(8), desired(40), NOW)).toMatchObject({ granted: 16, outcome: "CAPPED_AT_MAX" });
    expect(decideScale(policy(), state(16), desired(17), NOW)).toMatchObject({ granted: 16, outcome: "CAPPED_AT_MAX" });
  });

  test("below min is held at min: HELD_AT_MIN, also when already at min", () => {
    expect(decideScale(policy(), state(8), desired(0), NOW)).toMatchObject({ granted: 2, outcome: "HELD_AT_MIN" });
    expect(decideScale(policy(), state(2), observed(0), NOW)).toMatchObject({ granted: 2, outcome: "HELD_AT_MIN" });
  });

  test("the clamp wins over step alignment at max", () => {
    expect(decideScale(policy({ step: 5 }), state(4), desired(9), NOW)).toMatchObject({ granted: 9, outcome: "SCALED_UP" });
    // 4 → 15 is three steps (19): more than max, so max.
    expect(decideScale(policy({ step: 5 }), state(4), desired(15), NOW)).toMatchObject({ granted: 16, outcome: "CAPPED_AT_MAX" });
    expect(decideScale(policy({ step: 5 }), state(14), desired(15), NOW)).toMatchObject({ granted: 16, outcome: "CAPPED_AT_MAX" });
  });

  test("scale-up cooldown: refused until last change + up cooldown, then allowed", () => {
    const s = state(4, { lastChangeAtMs: NOW - 59_000 });
    expect(decideScale(policy(), s, desired(6), NOW)).toMatchObject({ granted: 4, outcome: "COOLDOWN", nextChangeAtMs: NOW + 1_000 });
    expect(decideScale(policy(), s, desired(6), NOW + 1_000)).toMatchObject({ granted: 6, outcome: "SCALED_UP" });
  });

  test("scale-down cooldown is its own (longer) one, counted from the last change of either direction", () => {
    const s = state(8, { lastChangeAtMs: NOW - 120_000 }); // up-cooldown over, down-cooldown not
    expect(decideScale(policy(), s, desired(10), NOW)).toMatchObject({ outcome: "SCALED_UP" });
    expect(decideScale(policy(), s, desired(4), NOW)).toMatchObject({ granted: 8, outcome: "COOLDOWN", nextChangeAtMs: NOW + 180_000 });
    expect(decideScale(policy(), s, desired(4), NOW + 180_000)).toMatchObject({ granted: 4, outcome: "SCALED_DOWN" });
  });

  test("an unchanged answer during a cooldown is UNCHANGED, not COOLDOWN", () => {
    const s = state(8, { lastChangeAtMs: NOW - 10_000 });
    expect(decideScale(policy(), s, desired(8), NOW)).toMatchObject({ outcome: "UNCHANGED", nextChangeAtMs: NOW + 50_000 });
  });

  describe("budget", () => {
    // 100 minor units per unit-hour; 360 hours (15 days) left in November 2026 from NOW.
    const LEFT_HOURS = (PERIOD_END - NOW) / HOUR;

    test("the projected period cost is cost so far + granted units to the period's end", () => {
      const soFar = 4n * BigInt(14 * 24 * HOUR); // 4 units for 14 days
      const d = decideScale(policy({}, 100), state(4, { periodUnitMsSoFar: soFar }), desired(6), NOW);
      expect(LEFT_HOURS).toBe(384);
      expect(d.projectedPeriodCost).toBe(4n * 14n * 24n * 100n + 6n * 384n * 100n);
    });

    test("growth past the budget grants the most whole steps that fit: BUDGET_EXCEEDED", () => {
      // 6 units to the end would cost 230 400; the budget pays for 5 units (192 000) plus change.
      const d = decideScale(policy({ budget_per_period: 200_000 }, 100), state(2), desired(6), NOW);
      expect(d).toMatchObject({ granted: 5, outcome: "BUDGET_EXCEEDED" });
      expect(d.projectedPeriodCost).toBe(192_000n);
      const stepped = decideScale(policy({ budget_per_period: 200_000, step: 2 }, 100), state(2), desired(6), NOW);
      expect(stepped).toMatchObject({ granted: 4, outcome: "BUDGET_EXCEEDED" });
    });

    test("a budget reached mid-period (cost so far) leaves room for fewer units", () => {
      // Already spent 150 000 this period: 50 000 left buys 500 unit-hours → 1 unit over 384 h at 100.
      const soFar = 1_500n * BigInt(HOUR); // 1 500 unit-hours = 150 000
      const d = decideScale(policy({ budget_per_period: 200_000, min: 0 }, 100), state(0, { periodUnitMsSoFar: soFar }), desired(3), NOW);
      expect(d).toMatchObject({ granted: 1, previous: 0, outcome: "BUDGET_EXCEEDED" });
      expect(d.projectedPeriodCost).toBe(150_000n + 38_400n);
      const later = PERIOD_END - 100 * HOUR; // with 100 h left, 50 000 buys 5 units
      expect(decideScale(policy({ budget_per_period: 200_000, min: 0 }, 100), state(0, { periodUnitMsSoFar: soFar }), desired(9), later)).toMatchObject({
        granted: 5,
        outcome: "BUDGET_EXCEEDED",
      });
    });

    test("a budget already exceeded never forces a shrink, and never blocks one", () => {
      const over = 10_000n * BigInt(HOUR);
      const s = state(6, { periodUnitMsSoFar: over });
      expect(decideScale(policy({ budget_per_period: 1 }, 100), s, desired(8), NOW)).toMatchObject({ granted: 6, outcome: "BUDGET_EXCEEDED" });
      expect(decideScale(policy({ budget_per_period: 1 }, 100), s, desired(3), NOW)).toMatchObject({ granted: 3, outcome: "SCALED_DOWN" });
    });

    test("exactly at the budget fits; one minor unit over does not", () => {
      // 2 units × 384 h × 100 = 76 800 exactly.
      expect(decideScale(policy({ budget_per_period: 76_800 }, 100), state(1), desired(2), NOW).outcome).toBe("SCALED_UP");
      expect(decideScale(policy({ budget_per_period: 76_799 }, 100), state(1), desired(2), NOW)).toMatchObject({ granted: 1, outcome: "BUDGET_EXCEEDED" });
    });

    test("no price or no budget: no budget limit", () => {
      expect(decideScale(policy({ budget_per_period: 0 }), state(2), desired(16), NOW).outcome).toBe("SCALED_UP");
      expect(decideScale(policy({}, 100), state(2), desired(16), NOW).outcome).toBe("SCALED_UP");
    });
  });

  test("without a scaling policy the capacity is fixed at the limit", () => {
    const fixed = resolvePolicy(4, null, undefined);
    expect(decideScale(fixed, state(4), desired(10), NOW)).toMatchObject({ granted: 4, outcome: "CAPPED_AT_MAX" });
    expect(decideScale(fixed, state(4), desired(1), NOW)).toMatchObject({ granted: 4, outcome: "HELD_AT_MIN" });
  });
});

describe("money", () => {
  test("amounts round half up once, in bigint beyond 2^53", () => {
    expect(amountForUnitMs(1_800_000n, 1n)).toBe(1n); // half a unit-hour at 1 → 0.5 → 1
    expect(amountForUnitMs(1_799_999n, 1n)).toBe(0n);
    const huge = 10n ** 12n * 3_600_000n; // 10^12 unit-hours
    expect(amountForUnitMs(huge, 10n ** 6n)).toBe(10n ** 18n);
  });

  test("maxUnitMsWithin is the exact inverse of the rounding", () => {
    for (const [budget, price] of [[0n, 7n], [1n, 3n], [200_000n, 100n], [999n, 12_345n]] as const) {
      const most = maxUnitMsWithin(budget, price) ?? 0n;
      expect(amountForUnitMs(most, price)).toBeLessThanOrEqual(budget);
      expect(amountForUnitMs(most + 1n, price)).toBeGreaterThan(budget);
    }
  });
});
