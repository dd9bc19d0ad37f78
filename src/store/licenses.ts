/**
 * Reads that build the hot path's in-memory view: licence snapshots and API keys by hash.
 * Each function takes the database (or a transaction) first, as repository functions do.
 */
import type { Kysely } from "kysely";
import type { ApiKeyRecord, EntitlementRule, LicenseSnapshot } from "../licensing/snapshot.js";
import type { Database, Entitlement } from "./schema.js";

/** The licence with its effective entitlements, or undefined when there is no such licence. */
export async function loadLicenseSnapshot(
  db: Kysely<Database>,
  licenseId: string,
): Promise<LicenseSnapshot | undefined> {
  const license = await db.selectFrom("licenses").selectAll().where("id", "=", licenseId).executeTakeFirst();
  if (license === undefined) return undefined;
  const rows = await db
    .selectFrom("entitlements")
    .selectAll()
    .where((eb) => eb.or([eb("plan", "=", license.plan), eb("license_id", "=", license.id)]))
    .execute();
  return {
    licenseId: license.id,
    accountId: license.account_id,
    plan: license.plan,
    status: license.status,
    validFromMs: license.valid_from?.getTime() ?? null,
    validUntilMs: license.valid_until?.getTime() ?? null,
    environments: new Set(license.environments),
    version: license.version,
    entitlements: effectiveEntitlements(rows),
  };
}

const EVALUATION_ORDER: Readonly<Record<Entitlement["kind"], number>> = {
  boolean: 0,
  rate: 1,
  quota: 2,
  seats: 3,
  capacity: 4,
};

/**
 * Plan entitlements, each replaced by the licence's override of the same feature and kind,
 * grouped by feature in evaluation order (see LicenseSnapshot.entitlements).
 */
export function effectiveEntitlements(rows: readonly Entitlement[]): Map<string, EntitlementRule[]> {
  const byFeatureKind = new Map<string, EntitlementRule>();
  for (const row of rows) if (row.plan !== null) byFeatureKind.set(`${row.feature}\u0000${row.kind}`, toRule(row));
  for (const row of rows) if (row.license_id !== null) byFeatureKind.set(`${row.feature}\u0000${row.kind}`, toRule(row));
  const byFeature = new Map<string, EntitlementRule[]>();
  for (const rule of byFeatureKind.values()) {
    const rules = byFeature.get(rule.feature);
    if (rules === undefined) byFeature.set(rule.feature, [rule]);
    else rules.push(rule);
  }
  for (const rules of byFeature.values()) rules.sort((a, b) => EVALUATION_ORDER[a.kind] - EVALUATION_ORDER[b.kind]);
  return byFeature;
}

function toRule(row: Entitlement): EntitlementRule {
  return {
    feature: row.feature,
    kind: row.kind,
    limit: row.limit,
    period: row.period,
    burst: row.burst,
    overage: row.overage,
    failureMode: row.failure_mode,
    roles: row.roles,
    unitPrice: row.unit_price,
  };
}

/** The API key whose secret hashes to `secretHash`, or undefined. */
export async function findApiKeyByHash(
  db: Kysely<Database>,
  secretHash: string,
): Promise<ApiKeyRecord | undefined> {
  const row = await db
    .selectFrom("api_keys")
    .select(["id", "license_id", "prefix", "scopes", "expires_at", "revoked_at"])
    .where("secret_hash", "=", secretHash)
    .executeTakeFirst();
  if (row === undefined) return undefined;
  return {
    keyId: row.id,
    licenseId: row.license_id,
    prefix: row.prefix,
    scopes: row.scopes,
    expiresAtMs: row.expires_at?.getTime() ?? null,
    revokedAtMs: row.revoked_at?.getTime() ?? null,
  };
}

/**
 * The id of the account's licence, for credentials that name an account rather than a licence:
 * defined only when the account has exactly one active licence (otherwise the credential is
 * ambiguous and must name the licence).
 */
export async function findAccountLicense(db: Kysely<Database>, accountId: string): Promise<string | undefined> {
  const rows = await db
    .selectFrom("licenses")
    .select("id")
    .where("account_id", "=", accountId)
    .where("status", "=", "active")
    .limit(2)
    .execute();
  return rows.length === 1 ? rows[0]?.id : undefined;
}
