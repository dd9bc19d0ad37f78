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

export interface ReplicasTable {
  id: string;
  started_at: CreatedAt;
  heartbeat_at: CreatedAt;
  /** A replica whose expires_at has passed is no longer counted as live. */
  expires_at: Timestamp;
}

/**
 * Quota state per licence, feature and period (period_start is the UTC start of the period;
 * 1970-01-01 for lifetime quotas). Invariant for blocking entitlements:
 * used + leased + stranded <= limit.
 */
export interface QuotaCountersTable {
  license_id: string;
  feature: string;
  period_start: Timestamp;
  /** Units settled as consumed. */
  used: Generated<number>;
  /** Units granted to replicas' leases and not yet settled or returned. */
  leased: Generated<number>;
  /** Units of expired leases of vanished replicas: never granted again, never billed. */
  stranded: Generated<number>;
  /** Units allowed past the limit (allow_and_bill). */
  overage: Generated<number>;
  updated_at: CreatedAt;
}

export interface QuotaLeasesTable {
  replica_id: string;
  license_id: string;
  feature: string;
  period_start: Timestamp;
  /** Units currently held by the replica (granted minus settled minus returned). */
  amount: number;
  expires_at: Timestamp;
}

export interface SeatLeasesTable {
  license_id: string;
  feature: string;
  instance_id: string;
  replica_id: string;
  acquired_at: CreatedAt;
  expires_at: Timestamp;
}

export type DecisionOutcome = "allow" | "deny";

export interface DecisionLogTable {
  replica_id: string;
  /** Per-replica sequence, from 1, without gaps. */
  seq: number;
  /** Null on aggregated rows (count > 1). */
  decision_id: string | null;
  time: Timestamp;
  license_id: string | null;
  feature: string;
  decision: DecisionOutcome;
  /** The Reason enum's name without prefix, e.g. "QUOTA_EXHAUSTED". */
  reason: string;
  quantity: number;
  /** Decisions this row stands for (aggregated allows); 1 otherwise. */
  count: Generated<number>;
  /** Hash of the replica's previous row ("" before the first). */
  prev_hash: string;
  /** Hex SHA-256 over prev_hash and this row's canonical form. */
  hash: string;
}

export interface IssuersTable {
  id: string;
  /** The `iss` claim value. */
  issuer: string;
  jwks_url: string;
  /** Accepted `aud` values; empty accepts none (a token must name an audience we expect). */
  audiences: string[];
  /** Allowed JWS algorithms, e.g. ["RS256"]; never "none", never HS*. */
  algorithms: string[];
  leeway_seconds: Generated<number>;
  /** Claim naming the licence id; exactly one of license_claim and account_claim is set. */
  license_claim: string | null;
  /** Claim naming the account id (the account's one active licence). */
  account_claim: string | null;
  /** Claim carrying roles: an array of strings, or a space-separated string (OAuth scope). */
  roles_claim: Generated<string>;
  created_at: CreatedAt;
  updated_at: CreatedAt;
}

export interface ServiceTokensTable {
  id: string;
  prefix: string;
  secret_hash: string;
  /** What the token may do, e.g. ["license_id"] to name licences directly. */
  rights: string[];
  expires_at: Timestamp | null;
  revoked_at: Timestamp | null;
  created_at: CreatedAt;
  updated_at: CreatedAt;
}

export interface SigningKeysTable {
  kid: string;
  algorithm: Generated<string>;
  public_jwk: ColumnType<Record<string, unknown>, string, string>;
  /** base64url(iv || ciphertext || tag) of the PKCS#8 private key under the key-encryption key. */
  private_key_encrypted: string;
  created_at: CreatedAt;
  /** The newest activated, unretired key signs; all unretired keys verify. */
  activated_at: Timestamp | null;
  retired_at: Timestamp | null;
}

/** Which feature (and cost) a proxied request uses, by method and path prefix. */
export interface RoutesTable {
  id: string;
  /** Upper-case HTTP method, or "*" for any. */
  method: Generated<string>;
  /** Starts with "/"; matched against the normalized path. */
  path_prefix: string;
  feature: string;
  cost: Generated<number>;
  created_at: CreatedAt;
  updated_at: CreatedAt;
}

/** Account-scoped admin tokens (lk_adm_...): administer one account through AdminService. */
export interface AdminTokensTable {
  id: string;
  account_id: string;
  /** The non-secret start of the token, e.g. "lk_adm_3fQ9x". */
  prefix: string;
  /** Lower-case hex SHA-256 of the whole secret. The secret itself is never stored. */
  secret_hash: string;
  created_at: CreatedAt;
  revoked_at: Timestamp | null;
}

/** The idempotency guard of usage events: one row per event id ever accepted (unpartitioned). */
export interface UsageEventIdsTable {
  id: string;
  occurred_at: Timestamp;
}

/** Reported usage, partitioned by month of occurred_at (see migrations/20261121020000_usage.ts). */
export interface UsageEventsTable {
  id: string;
  license_id: string;
  feature: string;
  quantity: number;
  occurred_at: Timestamp;
  received_at: Timestamp;
  attributes: ColumnType<Record<string, string>, string | undefined, string>;
  operation_id: string | null;
}

/** A Check's reservation and the Report that settles it (src/metering/reservations.ts). */
export interface UsageReservationsTable {
  license_id: string;
  feature: string;
  operation_id: string;
  reserved: number | null;
  actual: number | null;
  /** Net units the settlement has added to (+) or released from (-) quota_counters. */
  applied: Generated<number>;
  /** What the last write changed `applied` by. */
  last_change: Generated<number>;
  pending_release: Generated<number>;
  period_start: Timestamp;
  quota_limit: number;
  allow_overage: boolean;
  created_at: Timestamp;
  expires_at: Timestamp;
  settled_at: Timestamp | null;
  expired_at: Timestamp | null;
}

/** The frozen statement of a closed billing period. */
export interface UsageStatementsTable {
  license_id: string;
  /** "2026-11" */
  period: string;
  computed_at: Timestamp;
  statement: ColumnType<unknown, string, string>;
}

/** The capacity units held now (Scale); absent: the entitlement's limit holds. */
export interface CapacityStateTable {
  license_id: string;
  feature: string;
  units: number;
  /** Grows by one on every change of units. */
  version: Generated<number>;
  /** The last change of units by Scale, either direction; cooldowns count from it. Null: none. */
  last_change_at: Timestamp | null;
  updated_at: CreatedAt;
}

/** Every change of capacity units: held over [valid_from, valid_to), valid_to null = current. */
export interface CapacityLedgerTable {
  id: Generated<number>;
  license_id: string;
  feature: string;
  units: number;
  valid_from: Timestamp;
  valid_to: Timestamp | null;
  /** "initial", "scale", "auto", or the caller's reason. */
  reason: string;
  /** Who changed it: "license:<id>", "key:<prefix>", "auto". */
  caller: string;
  /** Unique per licence and feature when set. */
  request_id: string | null;
}

/** Scale's first answer per request_id, for retries. */
export interface CapacityRequestsTable {
  license_id: string;
  feature: string;
  request_id: string;
  response: ColumnType<unknown, string, string>;
  created_at: CreatedAt;
}

export interface Database {
  accounts: AccountsTable;
  plans: PlansTable;
  licenses: LicensesTable;
  entitlements: EntitlementsTable;
  api_keys: ApiKeysTable;
  replicas: ReplicasTable;
  quota_counters: QuotaCountersTable;
  quota_leases: QuotaLeasesTable;
  seat_leases: SeatLeasesTable;
  decision_log: DecisionLogTable;
  issuers: IssuersTable;
  service_tokens: ServiceTokensTable;
  signing_keys: SigningKeysTable;
  usage_event_ids: UsageEventIdsTable;
  usage_events: UsageEventsTable;
  usage_reservations: UsageReservationsTable;
  usage_statements: UsageStatementsTable;
  capacity_state: CapacityStateTable;
  capacity_ledger: CapacityLedgerTable;
  capacity_requests: CapacityRequestsTable;
  admin_tokens: AdminTokensTable;
  routes: RoutesTable;
}

export type Account = Selectable<AccountsTable>;
export type Plan = Selectable<PlansTable>;
export type License = Selectable<LicensesTable>;
export type NewLicense = Insertable<LicensesTable>;
export type LicenseUpdate = Updateable<LicensesTable>;
export type Entitlement = Selectable<EntitlementsTable>;
export type ApiKey = Selectable<ApiKeysTable>;
