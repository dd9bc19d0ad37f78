import { describe, expect, it } from "vitest";
import { Reason } from "../../src/gen/licensing/v1/licensing_pb.js";
import type { CounterReader, QuotaView, RateView, SeatView } from "../../src/licensing/counters.js";
import { decide, keyVerdict, type Decision, type DecisionRequest } from "../../src/licensing/decide.js";
import type { ApiKeyRecord, EntitlementRule, LicenseSnapshot } from "../../src/licensing/snapshot.js";

const NOW = Date.parse("2026-11-21T12:00:00Z");
const MONTH_END = Date.parse("2026-12-01T00:00:00Z");

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

const QUOTA = rule("api.calls", { kind: "quota", limit: 100, period: "month" });
const RATE = rule("api.calls", { kind: "rate", limit: 10, period: "second" });
const SEATS = rule("ide", { kind: "seats", limit: 2 });

function snapshot(overrides: Partial<LicenseSnapshot> = {}, rules: EntitlementRule[] = [rule("reports.export")]): LicenseSnapshot {
  const entitlements = new Map<string, EntitlementRule[]>();
  for (const r of rules) entitlements.set(r.feature, [...(entitlements.get(r.feature) ?? []), r]);
  return {
    licenseId: "acme-prod",
    accountId: "acme",
    plan: "pro",
    status: "active",
    validFromMs: null,
    validUntilMs: null,
    environments: new Set(),
    version: 3,
    entitlements,
    ...overrides,
  };
}

interface Views {
  quota?: Partial<QuotaView>;
  rate?: Partial<RateView>;
  seat?: Partial<SeatView>;
}

function counters(views: Views = {}): CounterReader {
  return {
    quota: () => ({ localAvailable: 0, remaining: 100, exhausted: false, resetsAtMs: MONTH_END, ...views.quota }),
    rate: () => ({ tokens: 10, capacity: 10, refillPerSecond: 10, ...views.rate }),
    seat: () => ({ held: false, inUse: 0, nextExpiryMs: null, ...views.seat }),
  };
}

function request(overrides: Partial<DecisionRequest> = {}): DecisionRequest {
  return {
    feature: "reports.export",
    quantity: 1,
    environment: "",
    roles: [],
    instanceId: "",
    dryRun: false,
    postgres: "ask",
    ...overrides,
  };
}

function decided(decision: Decision) {
  if (decision.outcome !== "decided") throw new Error(`expected a decision, got needs ${JSON.stringify(decision.needs)}`);
  return decision;
}

describe("decide: licence rules", () => {
  it("allows an active licence's boolean feature, consuming nothing", () => {
    const d = decided(decide(snapshot(), request(), counters(), NOW));
    expect(d.verdict).toMatchObject({ allow: true, reason: Reason.OK });
    expect(d.consumption).toEqual([]);
    expect(d.status).toBeUndefined();
  });

  it("denies a feature the plan does not include, naming it", () => {
    const d = decided(decide(snapshot(), request({ feature: "sso" }), counters(), NOW));
    expect(d.verdict).toMatchObject({ allow: false, reason: Reason.FEATURE_NOT_ENTITLED });
    expect(d.verdict.message).toContain('"sso"');
  });

  it("denies a suspended licence before looking at features", () => {
    const d = decided(decide(snapshot({ status: "suspended" }), request({ feature: "sso" }), counters(), NOW));
    expect(d.verdict.reason).toBe(Reason.LICENSE_SUSPENDED);
  });

  it("enforces the validity window: not yet valid, valid, expired at exactly valid_until", () => {
    const window = { validFromMs: NOW + 1, validUntilMs: NOW + 1000 };
    expect(decided(decide(snapshot(window), request(), counters(), NOW)).verdict.reason).toBe(Reason.LICENSE_NOT_YET_VALID);
    expect(decided(decide(snapshot(window), request(), counters(), NOW + 1)).verdict.reason).toBe(Reason.OK);
    expect(decided(decide(snapshot(window), request(), counters(), NOW + 1000)).verdict.reason).toBe(Reason.LICENSE_EXPIRED);
  });

  it("restricts environments when the licence lists them, including an unspecified one", () => {
    const restricted = snapshot({ environments: new Set(["production"]) });
    expect(decided(decide(restricted, request({ environment: "production" }), counters(), NOW)).verdict.reason).toBe(Reason.OK);
    expect(decided(decide(restricted, request({ environment: "staging" }), counters(), NOW)).verdict.reason).toBe(
      Reason.ENVIRONMENT_NOT_ALLOWED,
    );
    expect(decided(decide(restricted, request(), counters(), NOW)).verdict.reason).toBe(Reason.ENVIRONMENT_NOT_ALLOWED);
  });

  it("requires one of the feature's roles when it lists any", () => {
    const guarded = snapshot({}, [rule("reports.export", { roles: ["analyst", "admin"] })]);
    expect(decided(decide(guarded, request(), counters(), NOW)).verdict.reason).toBe(Reason.ROLE_NOT_ALLOWED);
    expect(decided(decide(guarded, request({ roles: ["admin"] }), counters(), NOW)).verdict.reason).toBe(Reason.OK);
  });
});

describe("decide: quotas", () => {
  const licence = snapshot({}, [QUOTA]);
  const quota = (overrides: Partial<DecisionRequest> = {}) => request({ feature: "api.calls", ...overrides });

  it("spends lease units from memory and reports limit, remaining and resets_at", () => {
    const d = decided(decide(licence, quota({ quantity: 3 }), counters({ quota: { localAvailable: 5, remaining: 40 } }), NOW));
    expect(d.verdict.allow).toBe(true);
    expect(d.consumption).toEqual([{ kind: "quota", rule: QUOTA, quantity: 3, overage: 0 }]);
    expect(d.status).toEqual({ limit: 100, remaining: 37, resetsAtMs: MONTH_END, retryAtMs: null });
  });

  it("asks Postgres for a lease when memory runs dry and the cluster may have units", () => {
    const d = decide(licence, quota({ quantity: 3 }), counters({ quota: { localAvailable: 2 } }), NOW);
    expect(d).toEqual({ outcome: "need", needs: [{ kind: "quota", rule: QUOTA, quantity: 3 }] });
  });

  it("denies QUOTA_EXHAUSTED with retry at the period reset once the cluster has none left", () => {
    const d = decided(decide(licence, quota(), counters({ quota: { localAvailable: 0, remaining: 0, exhausted: true } }), NOW));
    expect(d.verdict.reason).toBe(Reason.QUOTA_EXHAUSTED);
    expect(d.status).toEqual({ limit: 100, remaining: 0, resetsAtMs: MONTH_END, retryAtMs: MONTH_END });
    expect(d.consumption).toEqual([]);
  });

  it("allow_and_bill spends what is left and records the rest as overage", () => {
    const billed = snapshot({}, [{ ...QUOTA, overage: "allow_and_bill" }]);
    const d = decided(decide(billed, quota({ quantity: 5 }), counters({ quota: { localAvailable: 2, remaining: 2, exhausted: true } }), NOW));
    expect(d.verdict.allow).toBe(true);
    expect(d.consumption).toEqual([{ kind: "quota", rule: { ...QUOTA, overage: "allow_and_bill" }, quantity: 5, overage: 3 }]);
  });

  it("quantity 0 and dry runs answer from memory and consume nothing", () => {
    const view = counters({ quota: { localAvailable: 0, remaining: 50 } });
    for (const asked of [quota({ quantity: 0 }), quota({ quantity: 7, dryRun: true })]) {
      const d = decided(decide(licence, asked, view, NOW));
      expect(d.verdict.allow).toBe(true);
      expect(d.consumption).toEqual([]);
    }
    const tooMuch = decided(decide(licence, quota({ quantity: 51, dryRun: true }), view, NOW));
    expect(tooMuch.verdict.reason).toBe(Reason.QUOTA_EXHAUSTED);
  });

  it("with Postgres unreachable, fail_closed denies BACKEND_UNAVAILABLE and fail_open allows, recorded for settlement", () => {
    const down = counters({ quota: { localAvailable: 1 } });
    const closed = decided(decide(licence, quota({ quantity: 3, postgres: "unreachable" }), down, NOW));
    expect(closed.verdict.reason).toBe(Reason.BACKEND_UNAVAILABLE);
    const open = snapshot({}, [{ ...QUOTA, failureMode: "fail_open" }]);
    const allowed = decided(decide(open, quota({ quantity: 3, postgres: "unreachable" }), down, NOW));
    expect(allowed.verdict.allow).toBe(true);
    expect(allowed.consumption).toMatchObject([{ kind: "quota", quantity: 1 }]);
    expect(allowed.failOpen).toMatchObject([{ quantity: 2 }]);
  });

  it("with Postgres unreachable, units already leased still answer", () => {
    const d = decided(decide(licence, quota({ postgres: "unreachable" }), counters({ quota: { localAvailable: 4 } }), NOW));
    expect(d.verdict.allow).toBe(true);
    expect(d.failOpen).toEqual([]);
  });
});

describe("decide: rate limits", () => {
  const licence = snapshot({}, [RATE]);
  const rate = (overrides: Partial<DecisionRequest> = {}) => request({ feature: "api.calls", ...overrides });

  it("takes tokens from the bucket", () => {
    const d = decided(decide(licence, rate({ quantity: 2 }), counters({ rate: { tokens: 5 } }), NOW));
    expect(d.consumption).toEqual([{ kind: "rate", rule: RATE, quantity: 2 }]);
    expect(d.status?.remaining).toBe(3);
  });

  it("denies RATE_LIMITED with retry_after the time the missing tokens take to refill", () => {
    const d = decided(decide(licence, rate({ quantity: 3 }), counters({ rate: { tokens: 0.5, refillPerSecond: 10 } }), NOW));
    expect(d.verdict.reason).toBe(Reason.RATE_LIMITED);
    expect(d.status?.retryAtMs).toBe(NOW + 250);
  });

  it("a quantity beyond the burst is denied without a retry time", () => {
    const d = decided(decide(licence, rate({ quantity: 11 }), counters({ rate: { tokens: 10, capacity: 10 } }), NOW));
    expect(d.verdict.reason).toBe(Reason.RATE_LIMITED);
    expect(d.status?.retryAtMs).toBeNull();
  });
});

describe("decide: several limits on one feature are all-or-nothing", () => {
  const licence = snapshot({}, [RATE, QUOTA]);

  it("a rate deny consumes no quota, and a quota deny takes no tokens", () => {
    const rateDenied = decided(
      decide(licence, request({ feature: "api.calls" }), counters({ rate: { tokens: 0 }, quota: { localAvailable: 50 } }), NOW),
    );
    expect(rateDenied.verdict.reason).toBe(Reason.RATE_LIMITED);
    expect(rateDenied.consumption).toEqual([]);
    const quotaDenied = decided(
      decide(licence, request({ feature: "api.calls" }), counters({ quota: { exhausted: true, remaining: 0 } }), NOW),
    );
    expect(quotaDenied.verdict.reason).toBe(Reason.QUOTA_EXHAUSTED);
    expect(quotaDenied.consumption).toEqual([]);
  });

  it("an allow consumes from every limit and reports the tightest", () => {
    const d = decided(
      decide(licence, request({ feature: "api.calls" }), counters({ rate: { tokens: 10 }, quota: { localAvailable: 5, remaining: 3 } }), NOW),
    );
    expect(d.consumption.map((c) => c.kind)).toEqual(["rate", "quota"]);
    expect(d.status).toMatchObject({ limit: 100, remaining: 2 });
  });
});

describe("decide: seats and capacity", () => {
  const licence = snapshot({}, [SEATS]);
  const seat = (overrides: Partial<DecisionRequest> = {}) => request({ feature: "ide", instanceId: "host-1", ...overrides });

  it("a held seat is renewed from memory", () => {
    const d = decided(decide(licence, seat(), counters({ seat: { held: true, inUse: 1 } }), NOW));
    expect(d.verdict.allow).toBe(true);
    expect(d.consumption).toEqual([{ kind: "seat", rule: SEATS, instanceId: "host-1" }]);
    expect(d.status).toMatchObject({ limit: 2, remaining: 1 });
  });

  it("an instance without a seat asks Postgres, and is denied SEATS_EXHAUSTED if none was free", () => {
    expect(decide(licence, seat(), counters(), NOW)).toEqual({ outcome: "need", needs: [{ kind: "seat", rule: SEATS, instanceId: "host-1" }] });
    const d = decided(decide(licence, seat({ postgres: "asked" }), counters({ seat: { inUse: 2, nextExpiryMs: NOW + 30_000 } }), NOW));
    expect(d.verdict.reason).toBe(Reason.SEATS_EXHAUSTED);
    expect(d.status?.retryAtMs).toBe(NOW + 30_000);
  });

  it("capacity entitlements deny with CAPACITY_EXHAUSTED", () => {
    const capacity = snapshot({}, [rule("nodes", { kind: "capacity", limit: 3 })]);
    const d = decided(decide(capacity, seat({ feature: "nodes", postgres: "asked" }), counters({ seat: { inUse: 3 } }), NOW));
    expect(d.verdict.reason).toBe(Reason.CAPACITY_EXHAUSTED);
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
