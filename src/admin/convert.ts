/** Database rows to AdminService messages (shared by the admin handlers). */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate, type Timestamp } from "@bufbuild/protobuf/wkt";
import type { Selectable } from "kysely";
import {
  ApiKeySchema,
  EntitlementSchema,
  LicenseSchema,
  type ApiKey,
  type Entitlement,
  type License,
} from "../gen/licensing/admin/v1/admin_pb.js";
import type { EntitlementRule } from "../licensing/snapshot.js";
import type { ApiKeysTable, EntitlementsTable, LicensesTable } from "../store/schema.js";

export function timestamp(date: Date): Timestamp {
  return timestampFromDate(date);
}

export function optionalTimestamp(date: Date | null): Timestamp | undefined {
  return date === null ? undefined : timestampFromDate(date);
}

function optionalInt(value: number | null): bigint | undefined {
  return value === null ? undefined : BigInt(value);
}

export function licenseMessage(row: Selectable<LicensesTable>): License {
  return create(LicenseSchema, {
    id: row.id,
    accountId: row.account_id,
    plan: row.plan,
    status: row.status,
    validFrom: optionalTimestamp(row.valid_from),
    validUntil: optionalTimestamp(row.valid_until),
    environments: row.environments,
    version: BigInt(row.version),
    createdAt: timestamp(row.created_at),
    updatedAt: timestamp(row.updated_at),
  });
}

export function entitlementRowMessage(row: Selectable<EntitlementsTable>): Entitlement {
  return create(EntitlementSchema, {
    feature: row.feature,
    kind: row.kind,
    limit: optionalInt(row.limit),
    period: row.period ?? "",
    burst: optionalInt(row.burst),
    overage: row.overage,
    failureMode: row.failure_mode,
    roles: row.roles,
    unitPrice: optionalInt(row.unit_price),
    override: row.license_id !== null,
  });
}

export function entitlementRuleMessage(rule: EntitlementRule, override: boolean): Entitlement {
  return create(EntitlementSchema, {
    feature: rule.feature,
    kind: rule.kind,
    limit: optionalInt(rule.limit),
    period: rule.period ?? "",
    burst: optionalInt(rule.burst),
    overage: rule.overage,
    failureMode: rule.failureMode,
    roles: [...rule.roles],
    unitPrice: optionalInt(rule.unitPrice),
    override,
  });
}

export function apiKeyMessage(row: Selectable<ApiKeysTable>): ApiKey {
  return create(ApiKeySchema, {
    id: row.id,
    licenseId: row.license_id,
    prefix: row.prefix,
    scopes: row.scopes,
    expiresAt: optionalTimestamp(row.expires_at),
    revokedAt: optionalTimestamp(row.revoked_at),
    createdAt: timestamp(row.created_at),
  });
}
