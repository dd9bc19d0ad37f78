/**
 * Capacity billing for usage statements: the metering statement's CapacityUsageSource backed
 * by the capacity ledger (unit-seconds actually held, priced per unit-hour).
 */
import type { CapacityLine, CapacityUsageSource } from "../metering/statement.js";
import { formatMonth, monthOf } from "../metering/partitions.js";
import { capacityCharges } from "./billing.js";

/**
 * Every capacity entitlement of the licence gets a line: its charge from the ledger, or zero
 * when its capacity never changed in the period (billing starts at the first Scale).
 */
export function ledgerCapacityUsage(now: () => number): CapacityUsageSource {
  return async (db, licenseId, rules, startMs) => {
    // Statements are monthly: startMs is the first instant of the month (UTC).
    const charges = await capacityCharges(db, licenseId, formatMonth(monthOf(startMs)), { nowMs: now() });
    const byFeature = new Map(charges.map((charge) => [charge.feature, charge]));
    return rules.map((rule): CapacityLine => {
      const charge = byFeature.get(rule.feature);
      return charge === undefined
        ? { feature: rule.feature, unitSeconds: 0n, unitPrice: BigInt(rule.unitPrice ?? 0), amountDue: 0n }
        : { feature: rule.feature, unitSeconds: charge.unitSeconds, unitPrice: charge.unitPrice, amountDue: charge.amount };
    });
  };
}
