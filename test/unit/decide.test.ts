import { describe, expect, it } from "vitest";
import { Reason } from "../../src/gen/licensing/v1/licensing_pb.js";
import { decide, keyVerdict, UnsupportedEntitlementError, type DecisionRequest } from "../../src/licensing/decide.js";
import type { ApiKeyRecord, EntitlementRule, LicenseSnapshot } from "../../src/licensing/snapshot.js";

const NOW = Date.parse("2026-11-21T12:00:00Z");

function rule(feature: string, overrides: Partial<EntitlementRule> = {}): EntitlementRule {
  return {
    feature,
    kind: "boolean",
    limit: null,
    period: null,
    burst: null,
    overage: "block",
    failureMode: "fail_closed",
    roles: [],
    unitPrice: null,
    ...overrides,
  };
}

function snapshot(overrides: Partial<LicenseSnapshot> = {}): LicenseSnapshot {
  return {
    licenseId: "acme-prod",
    accountId: "acme",
    plan: "pro",
    status: "active",
    validFromMs: null,
    validUntilMs: null,
    environments: new Set(),
    version: 3,
    entitlements: new Map([["reports.export", rule("reports.export")]]),
    ...overrides,
  };
}

const request: DecisionRequest = { feature: "reports.export", quantity: 1, environment: "", roles: [] };

describe("decide", () => {
  it("allows an active licence's boolean feature", () => {
    const verdict = decide(snapshot(), request, NOW);
    expect(verdict.allow).toBe(true);
    expect(verdict.reason).toBe(Reason.OK);
  });

  it("denies a feature the plan does not include, naming it", () => {
    const verdict = decide(snapshot(), { ...request, feature: "sso" }, NOW);
    expect(verdict).toMatchObject({ allow: false, reason: Reason.FEATURE_NOT_ENTITLED });
    expect(verdict.message).toContain('"sso"');
  });

  it("denies a suspended licence before looking at features", () => {
    const verdict = decide(snapshot({ status: "suspended" }), { ...request, feature: "sso" }, NOW);
    expect(verdict.reason).toBe(Reason.LICENSE_SUSPENDED);
  });

  it("enforces the validity window: not yet valid, valid, expired at exactly valid_until", () => {
    const window = { validFromMs: NOW + 1, validUntilMs: NOW + 1000 };
    expect(decide(snapshot(window), request, NOW).reason).toBe(Reason.LICENSE_NOT_YET_VALID);
    expect(decide(snapshot(window), request, NOW + 1).reason).toBe(Reason.OK);
    expect(decide(snapshot(window), request, NOW + 1000).reason).toBe(Reason.LICENSE_EXPIRED);
  });

  it("restricts environments when the licence lists them, including an unspecified one", () => {
    const restricted = snapshot({ environments: new Set(["production"]) });
    expect(decide(restricted, { ...request, environment: "production" }, NOW).reason).toBe(Reason.OK);
    expect(decide(restricted, { ...request, environment: "staging" }, NOW).reason).toBe(Reason.ENVIRONMENT_NOT_ALLOWED);
    expect(decide(restricted, request, NOW).reason).toBe(Reason.ENVIRONMENT_NOT_ALLOWED);
  });

  it("requires one of the feature's roles when it lists any", () => {
    const guarded = snapshot({ entitlements: new Map([["reports.export", rule("reports.export", { roles: ["analyst", "admin"] })]]) });
    expect(decide(guarded, request, NOW).reason).toBe(Reason.ROLE_NOT_ALLOWED);
    expect(decide(guarded, { ...request, roles: ["admin"] }, NOW).reason).toBe(Reason.OK);
  });

  it("refuses to guess for kinds it cannot count yet", () => {
    const quota = snapshot({ entitlements: new Map([["api.calls", rule("api.calls", { kind: "quota", limit: 10, period: "month" })]]) });
    expect(() => decide(quota, { ...request, feature: "api.calls" }, NOW)).toThrow(UnsupportedEntitlementError);
  });
});

describe("keyVerdict", () => {
  const key: ApiKeyRecord = { keyId: "k", licenseId: "acme-prod", prefix: "lk_live_abcd", scopes: [], expiresAtMs: null, revokedAtMs: null };

  it("accepts a live key", () => {
    expect(keyVerdict(key, NOW)).toBeUndefined();
  });

  it("denies a revoked key with CREDENTIAL_REVOKED and an expired one with TOKEN_EXPIRED", () => {
    expect(keyVerdict({ ...key, revokedAtMs: NOW - 1 }, NOW)?.reason).toBe(Reason.CREDENTIAL_REVOKED);
    expect(keyVerdict({ ...key, expiresAtMs: NOW }, NOW)?.reason).toBe(Reason.TOKEN_EXPIRED);
    expect(keyVerdict({ ...key, expiresAtMs: NOW + 1 }, NOW)).toBeUndefined();
  });

  it("never puts more than the key's prefix in a message", () => {
    expect(keyVerdict({ ...key, revokedAtMs: NOW }, NOW)?.message).toContain("lk_live_abcd…");
  });
});
