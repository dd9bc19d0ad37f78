/**
 * Table types for Kysely: one interface per table, and `Database` listing them.
 *
 * Conventions: ids are caller-chosen slugs (text) so rules files can name them; int8 columns
 * are read as JS numbers (the drivers are configured to refuse values beyond
 * Number.MAX_SAFE_INTEGER rather than round them); times are `timestamptz` read as `Date`.
 */
import type { ColumnType, Generated, Insertable, Selectable, Updateable } from "kysely";

/** A timestamptz column: read as Date, written as Date or ISO string. */
export type Timestamp = ColumnType<Date, Date | string, Date | string>;
/** A timestamptz column the database fills on insert. */
export type CreatedAt = ColumnType<Date, Date | string | undefined, Date | string>;

export interface AccountsTable {
  id: string;
  name: string;
  created_at: CreatedAt;
  updated_at: CreatedAt;
}

export interface PlansTable {
  name: string;
  description: string | null;
  created_at: CreatedAt;
  updated_at: CreatedAt;
}

export type LicenseStatus = "active" | "suspended";

export interface LicensesTable {
  id: string;
  account_id: string;
  plan: string;
  status: LicenseStatus;
  /** Null: valid since forever. */
  valid_from: Timestamp | null;
  /** Null: valid forever. */
  valid_until: Timestamp | null;
  /** Empty: every environment is allowed. */
  environments: string[];
  /** Grows by one on every change to the licence, its entitlement overrides or its keys. */
  version: Generated<number>;
  created_at: CreatedAt;
  updated_at: CreatedAt;
}

export type EntitlementKind = "boolean" | "quota" | "rate" | "seats" | "capacity";
export type EntitlementPeriod = "second" | "minute" | "hour" | "day" | "month" | "lifetime";
export type OveragePolicy = "block" | "allow_and_bill";
export type FailureMode = "fail_closed" | "fail_open";

/**
 * An entitlement belongs either to a plan (shared by every licence on it) or to one licence
 * (an override that replaces the plan's entitlement for the same feature). Exactly one of
 * `plan` and `license_id` is set.
 */
export interface EntitlementsTable {
  id: Generated<number>;
  plan: string | null;
  license_id: string | null;
  feature: string;
  kind: EntitlementKind;
  /** Units per period (quota), per window (rate), concurrent instances (seats), units (capacity). */
  limit: number | null;
  period: EntitlementPeriod | null;
  /** Token-bucket size for rate limits; null means equal to `limit`. */
  burst: number | null;
  overage: OveragePolicy;
  failure_mode: FailureMode;
  /** Roles or scopes the caller must hold (any of them); empty: no requirement. */
  roles: string[];
  /** Price per unit (quota overage) or per unit-hour (capacity), in minor currency units. */
  unit_price: number | null;
  /** Capacity scaling policy (min, max, step, cooldowns, budget), as declared in the rules. */
  scaling: ColumnType<unknown, string | null, string | null> | null;
  created_at: CreatedAt;
  updated_at: CreatedAt;
}

export interface ApiKeysTable {
  id: string;
  license_id: string;
  /** The non-secret start of the key, e.g. "lk_live_3fQ9", for listing and logs. */
  prefix: string;
  /** Lower-case hex SHA-256 of the whole secret. The secret itself is never stored. */
  secret_hash: string;
  scopes: string[];
  expires_at: Timestamp | null;
  revoked_at: Timestamp | null;
  created_at: CreatedAt;
  updated_at: CreatedAt;
}

export interface Database {
  accounts: AccountsTable;
  plans: PlansTable;
  licenses: LicensesTable;
  entitlements: EntitlementsTable;
  api_keys: ApiKeysTable;
}

export type Account = Selectable<AccountsTable>;
export type Plan = Selectable<PlansTable>;
export type License = Selectable<LicensesTable>;
export type NewLicense = Insertable<LicensesTable>;
export type LicenseUpdate = Updateable<LicensesTable>;
export type Entitlement = Selectable<EntitlementsTable>;
export type ApiKey = Selectable<ApiKeysTable>;
