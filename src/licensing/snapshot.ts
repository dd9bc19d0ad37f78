/**
 * A licence as the hot path sees it: immutable, in memory, with its effective entitlements (the
 * plan's, replaced feature by feature by the licence's overrides). Decisions are made from
 * snapshots only; the store builds them (store/licenses.ts) and the cache holds them.
 */
import type {
  EntitlementKind,
  EntitlementPeriod,
  FailureMode,
  LicenseStatus,
  OveragePolicy,
} from "../store/schema.js";

export interface EntitlementRule {
  readonly feature: string;
  readonly kind: EntitlementKind;
  /** Units per period, per window, seats or capacity units; null for boolean features. */
  readonly limit: number | null;
  readonly period: EntitlementPeriod | null;
  readonly burst: number | null;
  readonly overage: OveragePolicy;
  readonly failureMode: FailureMode;
  /** Roles or scopes of which the caller must hold at least one; empty: none required. */
  readonly roles: readonly string[];
  readonly unitPrice: number | null;
}

export interface LicenseSnapshot {
  readonly licenseId: string;
  readonly accountId: string;
  readonly plan: string;
  readonly status: LicenseStatus;
  /** Epoch milliseconds, or null for "since forever". */
  readonly validFromMs: number | null;
  /** Epoch milliseconds, or null for "forever". */
  readonly validUntilMs: number | null;
  /** Empty: every environment is allowed. */
  readonly environments: ReadonlySet<string>;
  /** Grows with every change to the licence; returned as policy_version. */
  readonly version: number;
  /**
   * Every limit on each feature (at most one per kind), in evaluation order: boolean, rate,
   * quota, seats, capacity — local, cheap denies before limits that may need Postgres.
   */
  readonly entitlements: ReadonlyMap<string, readonly EntitlementRule[]>;
}

/** An API key as the hot path sees it: never the secret, only what the hash resolved to. */
export interface ApiKeyRecord {
  readonly keyId: string;
  readonly licenseId: string;
  readonly prefix: string;
  readonly scopes: readonly string[];
  readonly expiresAtMs: number | null;
  readonly revokedAtMs: number | null;
}
