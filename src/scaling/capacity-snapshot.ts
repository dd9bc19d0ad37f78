/**
 * Check enforces the capacity Scale holds: a licence snapshot's capacity entitlements carry
 * the units of capacity_state (when Scale has set them) as their `limit`, which the seat
 * engine enforces (at most `limit` live instances, exact across replicas).
 *
 * A change of capacity_state NOTIFYs "license:<id>" (migration 20261121030000), so every
 * replica drops and reloads the snapshot: the new units apply at once everywhere.
 */
import type { Kysely } from "kysely";
import type { EntitlementRule, LicenseSnapshot } from "../licensing/snapshot.js";
import { loadLicenseSnapshot } from "../store/licenses.js";
import type { Database } from "../store/schema.js";
import { readCapacityUnits } from "./capacity-store.js";

/** The snapshot with each capacity entitlement's limit replaced by the units held, if set. */
export function withCapacityUnits(snapshot: LicenseSnapshot, units: ReadonlyMap<string, number>): LicenseSnapshot {
  if (units.size === 0) return snapshot;
  const entitlements = new Map(snapshot.entitlements);
  for (const [feature, held] of units) {
    const rules = entitlements.get(feature);
    if (rules === undefined || !rules.some((r) => r.kind === "capacity")) continue;
    entitlements.set(
      feature,
      rules.map((r): EntitlementRule => (r.kind === "capacity" ? { ...r, limit: held } : r)),
    );
  }
  return { ...snapshot, entitlements };
}

/** loadLicenseSnapshot, then the capacity units held (one more indexed query). */
export async function loadScaledLicenseSnapshot(db: Kysely<Database>, licenseId: string): Promise<LicenseSnapshot | undefined> {
  const snapshot = await loadLicenseSnapshot(db, licenseId);
  if (snapshot === undefined) return undefined;
  return withCapacityUnits(snapshot, await readCapacityUnits(db, licenseId));
}
