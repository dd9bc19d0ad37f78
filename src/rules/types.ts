/**
 * The rules document: how operators declare accounts, plans, licences, API keys, the identity
 * providers whose JWTs Check accepts (issuers) and service tokens.
 *
 * These types describe a *validated, normalized* document: every default is filled in, every
 * list of names is sorted and free of duplicates, and every time is a canonical ISO 8601 UTC
 * string (`2026-01-01T00:00:00.000Z`). Two documents that mean the same thing are therefore
 * deep-equal, which is what lets `diffRules` compare a document with the database field by
 * field. `validateRules` is the only producer of this shape from untrusted input; the format
 * itself is documented in docs/rules.md and schemas/rules.schema.json.
 */
import type {
  EntitlementKind,
  EntitlementPeriod,
  FailureMode,
  LicenseStatus,
  OveragePolicy,
} from "../store/schema.js";

export type { EntitlementKind, EntitlementPeriod, FailureMode, LicenseStatus, OveragePolicy };

/** The only format version this code reads and writes. */
export const RULES_VERSION = 1;

/** Largest accepted document, in bytes of UTF-8 (the admin API caps requests at the same). */
export const MAX_RULES_DOCUMENT_BYTES = 4 * 1024 * 1024;

export interface RulesDocument {
  version: typeof RULES_VERSION;
  /** Sorted by id. */
  accounts: AccountRule[];
  /** Sorted by name. */
  plans: PlanRule[];
  /** Sorted by id. */
  licenses: LicenseRule[];
  /** Sorted by id. */
  api_keys: ApiKeyRule[];
  /** Sorted by id. */
  issuers: IssuerRule[];
  /** Sorted by id. */
  service_tokens: ServiceTokenRule[];
  /** Sorted by id. */
  routes: RouteRule[];
}

export interface AccountRule {
  id: string;
  name: string;
}

export interface PlanRule {
  name: string;
  /** Absent: no description (stored as null). */
  description?: string;
  /** Sorted by feature, then kind; at most one per (feature, kind). */
  entitlements: EntitlementRule[];
}

export interface LicenseRule {
  id: string;
  /** An account id declared in the same document. */
  account: string;
  /** A plan name declared in the same document. */
  plan: string;
  /** Default "active". */
  status: LicenseStatus;
  /** Absent: valid since forever. Canonical ISO string. */
  valid_from?: string;
  /** Absent: valid forever. Canonical ISO string, after valid_from. */
  valid_until?: string;
  /** Empty (the default): every environment is allowed. Sorted. */
  environments: string[];
  /**
   * Entitlements replacing the plan's of the same (feature, kind), or adding one. Sorted by
   * feature, then kind; at most one per (feature, kind).
   */
  overrides: EntitlementRule[];
}

export interface ApiKeyRule {
  id: string;
  /** A licence id declared in the same document. */
  license: string;
  /** Sorted; empty by default. */
  scopes: string[];
  /** Absent: never expires. Canonical ISO string. */
  expires_at?: string;
  /** Default false. */
  revoked: boolean;
}

/**
 * A customer's identity provider: Check accepts JWTs whose `iss` is `issuer`, signed by a key
 * of `jwks_url` with one of `algorithms`, for one of `audiences`.
 */
export interface IssuerRule {
  id: string;
  /** The exact `iss` claim value; unique among issuers. */
  issuer: string;
  /** http(s) URL of the issuer's JSON Web Key Set. */
  jwks_url: string;
  /** Accepted `aud` values (any of them); at least one. Sorted. */
  audiences: string[];
  /** Allowed JWS algorithms (asymmetric only); default ["RS256"]. Sorted. */
  algorithms: JwtAlgorithm[];
  /** Clock skew tolerated on exp/nbf/iat, seconds, 0..600; default 60. */
  leeway_seconds: number;
  /** Exactly one of license_claim and account_claim is set: the claim naming the licence... */
  license_claim?: string;
  /** ...or the claim naming the account (whose one active licence is meant). */
  account_claim?: string;
  /** Claim holding roles: an array of strings or a space-separated string; default "roles". */
  roles_claim: string;
}

/**
 * A trusted internal caller (e.g. a billing service) authenticated by a secret `lk_svc_...`,
 * allowed what its `rights` say.
 */
export interface ServiceTokenRule {
  id: string;
  /** Sorted, distinct; "license_id" (name licences directly) is the only right for now. */
  rights: ServiceTokenRight[];
  /** Absent: never expires. Canonical ISO string. */
  expires_at?: string;
  /** Default false. */
  revoked: boolean;
}

/**
 * Which feature (and how many units of it) a request proxied through Envoy ext_authz or
 * forward-auth uses, when the proxy does not name the feature itself.
 */
export interface RouteRule {
  id: string;
  /** Upper-case HTTP method; absent: any method. */
  method?: string;
  /** Starts with "/"; the longest matching prefix wins. */
  path_prefix: string;
  feature: string;
  /** Units per request; default 1, 0 asks without consuming. */
  cost: number;
}

export interface EntitlementRule {
  feature: string;
  kind: EntitlementKind;
  /** Required for every kind but boolean; absent for boolean. */
  limit?: number;
  /** quota: hour|day|month|lifetime; rate: second|minute; absent otherwise. */
  period?: EntitlementPeriod;
  /** rate only; absent means equal to limit. */
  burst?: number;
  /** Default "block". */
  overage: OveragePolicy;
  /** Default "fail_closed". */
  failure_mode: FailureMode;
  /** quota (per overage unit) and capacity (per unit-hour), minor currency units. */
  unit_price?: number;
  /** Any-of; empty (the default) means no requirement. Sorted. */
  roles: string[];
  /** capacity only. */
  scaling?: ScalingRule;
}

/**
 * A capacity scaling policy, stored in `entitlements.scaling` exactly as declared (absent
 * optional fields stay absent); consumers fill the gaps from `SCALING_DEFAULTS`.
 */
export interface ScalingRule {
  /** Fewest units Scale may grant; ≤ the entitlement's limit. */
  min: number;
  /** Most units Scale may grant; ≥ the entitlement's limit. */
  max: number;
  /** Units added or removed per scaling step; ≥ 1. */
  step?: number;
  /** Utilization (0 < x ≤ 1) that Scale steers towards from observed usage. */
  target_utilization?: number;
  scale_up_cooldown_seconds?: number;
  scale_down_cooldown_seconds?: number;
  /** Most a licence may spend on this capacity per billing period, minor currency units. */
  budget_per_period?: number;
  /**
   * Threshold mode, instead of target_utilization (set both thresholds or neither): from an
   * observed utilization above this ratio (0 < x ≤ 1), Scale grows one step.
   */
  scale_up_threshold?: number;
  /** Threshold mode: below this ratio (0 ≤ x < scale_up_threshold), Scale shrinks one step. */
  scale_down_threshold?: number;
  /** Present: the capacity scales itself, with no caller (src/scaling/auto-scaler.ts). */
  auto?: AutoScalingRule;
}

export const AUTO_SCALING_SOURCES = ["utilization", "quota"] as const;
export type AutoScalingSource = (typeof AUTO_SCALING_SOURCES)[number];

/** Auto mode of a capacity scaling policy, stored as declared (absent fields stay absent). */
export interface AutoScalingRule {
  /**
   * What drives it: "utilization" (the last utilization reported through Scale, target
   * tracking or thresholds, plus the forecast of its growth) or "quota" (the forecast of a
   * quota of the same licence: grow one step when it would run out within the horizon).
   */
  source: AutoScalingSource;
  /** source "quota" only (and then required): the quota entitlement's feature key. */
  quota_feature?: string;
  /** Scale up ahead when the forecast depletion falls within this many seconds; ≥ 1. */
  horizon_seconds?: number;
}

/** What an omitted optional scaling field means; budget_per_period has none (unbounded). */
export const SCALING_DEFAULTS = Object.freeze({
  step: 1,
  target_utilization: 0.8,
  scale_up_cooldown_seconds: 60,
  scale_down_cooldown_seconds: 300,
});

/** What an omitted auto field means. */
export const AUTO_SCALING_DEFAULTS = Object.freeze({ horizon_seconds: 900 });

/** Asymmetric JWS algorithms an issuer may allow; never "none", never HS* (shared secrets). */
export const JWT_ALGORITHMS = [
  "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA",
] as const;
export type JwtAlgorithm = (typeof JWT_ALGORITHMS)[number];

export const SERVICE_TOKEN_RIGHTS = ["license_id"] as const;
export type ServiceTokenRight = (typeof SERVICE_TOKEN_RIGHTS)[number];

/** What an omitted optional issuer field means. */
export const ISSUER_DEFAULTS = Object.freeze({
  algorithms: ["RS256"] as readonly JwtAlgorithm[],
  leeway_seconds: 60,
  roles_claim: "roles",
});
/** Largest accepted leeway_seconds. */
export const MAX_LEEWAY_SECONDS = 600;

export const ENTITLEMENT_KINDS: readonly EntitlementKind[] = ["boolean", "quota", "rate", "seats", "capacity"];
export const LICENSE_STATUSES: readonly LicenseStatus[] = ["active", "suspended"];
export const OVERAGE_POLICIES: readonly OveragePolicy[] = ["block", "allow_and_bill"];
export const FAILURE_MODES: readonly FailureMode[] = ["fail_closed", "fail_open"];

/** An empty, valid document. */
export function emptyRulesDocument(): RulesDocument {
  return { version: RULES_VERSION, accounts: [], plans: [], licenses: [], api_keys: [], issuers: [], service_tokens: [], routes: [] };
}
