/**
 * The decision: a pure function of (snapshot, request, now). No I/O, no clock reads, no
 * globals; tested with plain objects and a fixed `now`.
 *
 * Rules are checked in a fixed order, so the reason a caller sees is stable: licence status,
 * validity window, environment, entitlement, roles, then the entitlement's own limit.
 */
import { Reason } from "../gen/licensing/v1/licensing_pb.js";
import type { ApiKeyRecord, EntitlementRule, LicenseSnapshot } from "./snapshot.js";

export interface DecisionRequest {
  readonly feature: string;
  /** Units asked for; 0 asks without consuming. */
  readonly quantity: number;
  /** Empty when the caller did not say. */
  readonly environment: string;
  /** Roles or scopes the credential carries. */
  readonly roles: readonly string[];
}

export interface Verdict {
  readonly allow: boolean;
  readonly reason: Reason;
  /** Safe to show to the end user; names the feature or licence, never a secret. */
  readonly message: string;
  /** The entitlement that decided, when the request got that far. */
  readonly entitlement?: EntitlementRule;
}

/**
 * Thrown for an entitlement kind whose enforcement is not built yet, so a Check can never
 * silently allow what it cannot count. Mapped to UNIMPLEMENTED.
 */
export class UnsupportedEntitlementError extends Error {
  constructor(readonly rule: EntitlementRule) {
    super(`feature "${rule.feature}": ${rule.kind} entitlements are not enforced yet`);
    this.name = "UnsupportedEntitlementError";
  }
}

const deny = (reason: Reason, message: string, entitlement?: EntitlementRule): Verdict =>
  entitlement === undefined ? { allow: false, reason, message } : { allow: false, reason, message, entitlement };

/** Whether the key itself may be used at `nowMs`; undefined when it may. */
export function keyVerdict(key: ApiKeyRecord, nowMs: number): Verdict | undefined {
  if (key.revokedAtMs !== null && key.revokedAtMs <= nowMs) {
    return deny(Reason.CREDENTIAL_REVOKED, `API key ${key.prefix}… has been revoked`);
  }
  if (key.expiresAtMs !== null && key.expiresAtMs <= nowMs) {
    return deny(Reason.TOKEN_EXPIRED, `API key ${key.prefix}… expired at ${new Date(key.expiresAtMs).toISOString()}`);
  }
  return undefined;
}

export function decide(snapshot: LicenseSnapshot, request: DecisionRequest, nowMs: number): Verdict {
  const licenseVerdict = checkLicense(snapshot, request, nowMs);
  if (licenseVerdict !== undefined) return licenseVerdict;

  const rule = snapshot.entitlements.get(request.feature);
  if (rule === undefined) {
    return deny(
      Reason.FEATURE_NOT_ENTITLED,
      `licence ${snapshot.licenseId} (plan ${snapshot.plan}) does not include feature "${request.feature}"`,
    );
  }
  if (rule.roles.length > 0 && !rule.roles.some((role) => request.roles.includes(role))) {
    return deny(
      Reason.ROLE_NOT_ALLOWED,
      `feature "${rule.feature}" requires one of the roles ${rule.roles.join(", ")}`,
      rule,
    );
  }
  if (rule.kind !== "boolean") throw new UnsupportedEntitlementError(rule);
  return { allow: true, reason: Reason.OK, message: "allowed", entitlement: rule };
}

function checkLicense(snapshot: LicenseSnapshot, request: DecisionRequest, nowMs: number): Verdict | undefined {
  if (snapshot.status === "suspended") {
    return deny(Reason.LICENSE_SUSPENDED, `licence ${snapshot.licenseId} is suspended`);
  }
  if (snapshot.validFromMs !== null && nowMs < snapshot.validFromMs) {
    return deny(
      Reason.LICENSE_NOT_YET_VALID,
      `licence ${snapshot.licenseId} is valid from ${new Date(snapshot.validFromMs).toISOString()}`,
    );
  }
  if (snapshot.validUntilMs !== null && nowMs >= snapshot.validUntilMs) {
    return deny(
      Reason.LICENSE_EXPIRED,
      `licence ${snapshot.licenseId} expired at ${new Date(snapshot.validUntilMs).toISOString()}`,
    );
  }
  if (snapshot.environments.size > 0 && !snapshot.environments.has(request.environment)) {
    const asked = request.environment === "" ? "an unspecified environment" : `environment "${request.environment}"`;
    return deny(
      Reason.ENVIRONMENT_NOT_ALLOWED,
      `licence ${snapshot.licenseId} is not valid in ${asked} (allowed: ${[...snapshot.environments].join(", ")})`,
    );
  }
  return undefined;
}
