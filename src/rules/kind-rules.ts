/**
 * What each entitlement kind requires and forbids. A field that a kind does not use is an
 * error rather than ignored: `period: month` on a seats entitlement is almost certainly a
 * mistake the operator wants to hear about.
 */
import { at, field, type Checker, type Mapping } from "./checker.js";
import type { EntitlementKind, EntitlementPeriod, EntitlementRule } from "./types.js";

type KindField = "limit" | "period" | "burst" | "unit_price" | "scaling";

interface KindRule {
  readonly required: readonly KindField[];
  readonly forbidden: readonly KindField[];
  /** Allowed periods, when the kind has one. */
  readonly periods?: readonly EntitlementPeriod[];
}

export const KIND_RULES: Readonly<Record<EntitlementKind, KindRule>> = {
  boolean: { required: [], forbidden: ["limit", "period", "burst", "unit_price", "scaling"] },
  quota: { required: ["limit", "period"], forbidden: ["burst", "scaling"], periods: ["hour", "day", "month", "lifetime"] },
  rate: { required: ["limit", "period"], forbidden: ["scaling"], periods: ["second", "minute"] },
  seats: { required: ["limit"], forbidden: ["period", "burst", "scaling"] },
  capacity: { required: ["limit"], forbidden: ["period", "burst"] },
};

/**
 * Reports fields missing or not allowed for `entitlement.kind`, a period outside the kind's
 * set, a burst below the limit, and a scaling range that does not contain the limit. `m` is
 * the raw mapping, so that a field present with a bad value counts as present.
 */
export function checkKindRules(c: Checker, m: Mapping, entitlement: EntitlementRule, path: string): void {
  const { kind } = entitlement;
  const rule = KIND_RULES[kind];
  for (const name of rule.required) {
    if (field(m, name) === undefined) c.report(at(path, name), `required for kind ${kind}`);
  }
  for (const name of rule.forbidden) {
    if (field(m, name) !== undefined) c.report(at(path, name), `not allowed for kind ${kind}`);
  }
  // A boolean has no limit to go over; "block" (the default) is tolerated so that normalized
  // documents, which spell every default out, still validate.
  if (kind === "boolean" && entitlement.overage !== "block") {
    c.report(at(path, "overage"), "not allowed for kind boolean");
  }
  checkPeriod(c, entitlement, rule, path);
  checkBurst(c, entitlement, path);
  checkScalingRange(c, entitlement, path);
}

function checkPeriod(c: Checker, e: EntitlementRule, rule: KindRule, path: string): void {
  if (e.period === undefined || rule.periods === undefined) return;
  if (!rule.periods.includes(e.period)) {
    c.report(at(path, "period"), `must be one of: ${rule.periods.join(", ")} (kind ${e.kind})`);
  }
}

function checkBurst(c: Checker, e: EntitlementRule, path: string): void {
  if (e.kind !== "rate" || e.burst === undefined || e.limit === undefined) return;
  if (e.burst < e.limit) c.report(at(path, "burst"), `must be at least limit (${e.limit})`);
}

function checkScalingRange(c: Checker, e: EntitlementRule, path: string): void {
  if (e.kind !== "capacity" || e.scaling === undefined || e.limit === undefined) return;
  const scalingPath = at(path, "scaling");
  if (e.scaling.min > e.limit) c.report(at(scalingPath, "min"), `must be at most limit (${e.limit})`);
  if (e.scaling.max < e.limit) c.report(at(scalingPath, "max"), `must be at least limit (${e.limit})`);
}
