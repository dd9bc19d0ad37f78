/**
 * Units allowed while Postgres was unreachable (fail_open entitlements): kept in memory, one
 * entry per counter, and settled when Postgres answers again (into `used`, and into `overage`
 * past the limit). Never dropped: a failed settlement keeps them for the next try.
 */
import type { Kysely } from "kysely";
import { settleFailOpen, type FailOpenRow } from "../../store/leases.js";
import type { Database } from "../../store/schema.js";
import type { EntitlementRule } from "../snapshot.js";
import { counterKey } from "./keyed.js";
import type { MutableEngineStats } from "./options.js";
import { periodStartMs } from "./period.js";

export interface FailOpenLedger {
  record(licenseId: string, rule: EntitlementRule, quantity: number, nowMs: number): void;
  /** Settles everything recorded in one statement. Rejects when Postgres failed (nothing is lost). */
  settle(): Promise<void>;
  /** What is still unsettled, per counter, for the shutdown log. */
  pending(): readonly FailOpenRow[];
}

export function createFailOpenLedger(db: Kysely<Database>, stats: MutableEngineStats): FailOpenLedger {
  let rows = new Map<string, FailOpenRow>();

  /** Only quotas have a counter to reconcile; rate and seat units allowed open leave no debt. */
  function record(licenseId: string, rule: EntitlementRule, quantity: number, nowMs: number): void {
    if (quantity <= 0 || rule.kind !== "quota") return;
    const periodStart = periodStartMs(rule.period, nowMs);
    merge(rows, { licenseId, feature: rule.feature, periodStartMs: periodStart, quantity, limit: rule.limit ?? 0 });
    stats.failOpenUnitsPending += quantity;
  }

  async function settle(): Promise<void> {
    if (rows.size === 0) return;
    const batch = rows;
    rows = new Map();
    const list = [...batch.values()];
    try {
      await settleFailOpen(db, list);
    } catch (error) {
      for (const row of list) merge(rows, row);
      throw error;
    }
    const units = list.reduce((sum, row) => sum + row.quantity, 0);
    stats.failOpenUnitsPending -= units;
    stats.failOpenUnitsSettled += units;
  }

  return { record, settle, pending: () => [...rows.values()] };
}

/** Adds a row into the map, summing quantities per counter; the newest limit wins. */
function merge(rows: Map<string, FailOpenRow>, row: FailOpenRow): void {
  const key = counterKey(row.licenseId, row.feature, row.periodStartMs);
  const seen = rows.get(key);
  rows.set(key, seen === undefined ? row : { ...row, quantity: seen.quantity + row.quantity });
}
