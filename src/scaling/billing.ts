/**
 * Capacity billing: unit-seconds integrated exactly over the capacity ledger, and the charges
 * of one monthly (UTC) period — what the usage statement (src/metering) calls.
 *
 * Rounding: the amount of a feature is unit-ms × unit_price / 3 600 000, rounded half up once
 * over the whole period (money.ts). The ledger's changes are at whole seconds, so unit_seconds
 * is exact. The price is the entitlement's unit_price when the statement is made.
 */
import type { Kysely } from "kysely";
import type { Database } from "../store/schema.js";
import { loadEntitlement, readLedgerSpans } from "./capacity-store.js";
import { integrateUnitMs, unitSecondsOf } from "./ledger-math.js";
import { amountForUnitMs } from "./money.js";

/** Unit-seconds of capacity held over [fromMs, toMs) (an open ledger row counts up to toMs). */
export async function capacityUnitSeconds(
  db: Kysely<Database>,
  licenseId: string,
  feature: string,
  fromMs: number,
  toMs: number,
): Promise<bigint> {
  return unitSecondsOf(await capacityUnitMs(db, licenseId, feature, fromMs, toMs));
}

async function capacityUnitMs(db: Kysely<Database>, licenseId: string, feature: string, fromMs: number, toMs: number): Promise<bigint> {
  if (toMs <= fromMs) return 0n;
  return integrateUnitMs(await readLedgerSpans(db, licenseId, feature, fromMs, toMs), fromMs, toMs);
}

export interface CapacityCharge {
  readonly feature: string;
  /** Unit-seconds held in the period (up to `nowMs` for the current period). */
  readonly unitSeconds: bigint;
  /** Minor currency units per unit-hour (0 when the entitlement has no price). */
  readonly unitPrice: bigint;
  /** Minor currency units, rounded half up once over the period. */
  readonly amount: bigint;
}

export interface CapacityChargesOptions {
  /** Epoch ms: capacity is billed up to here when the period is not over. Default: the period's end. */
  readonly nowMs?: number;
}

/** [start, end) of a "YYYY-MM" period in UTC, epoch ms. @throws RangeError for another format. */
export function monthPeriodMs(period: string): { startMs: number; endMs: number } {
  const match = /^(\d{4})-(0[1-9]|1[0-2])$/.exec(period);
  if (match === null) throw new RangeError(`period: must be YYYY-MM (got "${period}")`);
  const year = Number(match[1]);
  const month = Number(match[2]) - 1;
  return { startMs: Date.UTC(year, month, 1), endMs: Date.UTC(year, month + 1, 1) };
}

/**
 * One charge per capacity feature of the licence with ledger rows in `period` ("2026-11"),
 * sorted by feature.
 */
export async function capacityCharges(
  db: Kysely<Database>,
  licenseId: string,
  period: string,
  options: CapacityChargesOptions = {},
): Promise<CapacityCharge[]> {
  const { startMs, endMs } = monthPeriodMs(period);
  const toMs = Math.min(endMs, options.nowMs ?? endMs);
  const features = await db
    .selectFrom("capacity_ledger")
    .select("feature")
    .distinct()
    .where("license_id", "=", licenseId)
    .where("valid_from", "<", new Date(endMs))
    .where((eb) => eb.or([eb("valid_to", "is", null), eb("valid_to", ">", new Date(startMs))]))
    .orderBy("feature")
    .execute();
  const charges: CapacityCharge[] = [];
  for (const { feature } of features) {
    const unitMs = await capacityUnitMs(db, licenseId, feature, startMs, toMs);
    const found = await loadEntitlement(db, licenseId, feature, "capacity");
    const unitPrice = BigInt(found.entitlement?.unitPrice ?? 0);
    charges.push({ feature, unitSeconds: unitSecondsOf(unitMs), unitPrice, amount: amountForUnitMs(unitMs, unitPrice) });
  }
  return charges;
}
