import { describe, expect, test } from "vitest";
import { diffEntitlements, diffRules } from "../../src/rules/diff.js";
import type { EntitlementRule, RulesDocument } from "../../src/rules/types.js";

function entitlement(feature: string, limit?: number): EntitlementRule {
  return limit === undefined
    ? { feature, kind: "boolean", overage: "block", failure_mode: "fail_closed", roles: [] }
    : { feature, kind: "seats", limit, overage: "block", failure_mode: "fail_closed", roles: [] };
}

/** Two licences on plan "pro", one key each. Already normalized. */
function state(): RulesDocument {
  return {
    version: 1,
    accounts: [{ id: "acme", name: "Acme" }],
    plans: [
      { name: "free", entitlements: [] },
      { name: "pro", entitlements: [entitlement("reports.export"), entitlement("seats", 5)] },
    ],
    licenses: [
      { id: "l1", account: "acme", plan: "pro", status: "active", environments: [], overrides: [] },
      { id: "l2", account: "acme", plan: "pro", status: "active", environments: [], overrides: [] },
    ],
    api_keys: [
      { id: "k1", license: "l1", scopes: [], revoked: false },
      { id: "k2", license: "l2", scopes: [], revoked: false },
    ],
    issuers: [
      {
        id: "idp",
        issuer: "https://idp.example",
        jwks_url: "https://idp.example/jwks.json",
        audiences: ["licensing"],
        algorithms: ["RS256"],
        leeway_seconds: 60,
        license_claim: "license_id",
        roles_claim: "roles",
      },
    ],
    service_tokens: [{ id: "billing", rights: ["license_id"], revoked: false }],
    routes: [{ id: "export", method: "POST", path_prefix: "/v1/export", feature: "reports.export", cost: 1 }],
  };
}

/** The element, which the test's own fixture guarantees exists. */
function must<T>(value: T | undefined): T {
  if (value === undefined) throw new Error("fixture element missing");
  return value;
}

const empty: RulesDocument = { version: 1, accounts: [], plans: [], licenses: [], api_keys: [], issuers: [], service_tokens: [], routes: [] };

describe("diffRules", () => {
  test("identical documents differ in nothing", () => {
    expect(diffRules(state(), state(), { prune: true })).toEqual({ changes: [], versionBumps: [] });
  });

  test("everything is created in foreign-key order, and new licences get no bump", () => {
    const diff = diffRules(empty, state(), { prune: false });
    expect(diff.changes.map((c) => `${c.action} ${c.kind} ${c.id}`)).toEqual([
      "create account acme",
      "create plan free",
      "create plan pro",
      "create license l1",
      "create license l2",
      "create api_key k1",
      "create api_key k2",
      "create issuer idp",
      "create service_token billing",
      "create route export",
    ]);
    expect(diff.versionBumps).toEqual([]);
  });

  test("prune deletes undeclared objects in reverse foreign-key order", () => {
    const diff = diffRules(state(), empty, { prune: true });
    expect(diff.changes.map((c) => `${c.action} ${c.kind} ${c.id}`)).toEqual([
      "delete route export",
      "delete service_token billing",
      "delete issuer idp",
      "delete api_key k1",
      "delete api_key k2",
      "delete license l1",
      "delete license l2",
      "delete plan free",
      "delete plan pro",
      "delete account acme",
    ]);
    expect(diff.versionBumps).toEqual([]);
  });

  test("without prune undeclared objects are left alone", () => {
    expect(diffRules(state(), empty, { prune: false }).changes).toEqual([]);
  });

  test("an update names the fields that changed and bumps only that licence", () => {
    const desired = state();
    desired.licenses[0] = { ...must(desired.licenses[0]), status: "suspended", valid_until: "2027-01-01T00:00:00.000Z" };
    expect(diffRules(state(), desired, { prune: false })).toEqual({
      changes: [{ kind: "license", id: "l1", action: "update", fields: ["status", "valid_until"] }],
      versionBumps: ["l1"],
    });
  });

  test("an override change is a licence update", () => {
    const desired = state();
    desired.licenses[1] = { ...must(desired.licenses[1]), overrides: [entitlement("seats", 50)] };
    expect(diffRules(state(), desired, { prune: false })).toEqual({
      changes: [{ kind: "license", id: "l2", action: "update", fields: ["overrides"] }],
      versionBumps: ["l2"],
    });
  });

  test("a plan's entitlement change bumps every licence on it", () => {
    const desired = state();
    desired.plans[1] = { ...must(desired.plans[1]), entitlements: [entitlement("seats", 6)] };
    expect(diffRules(state(), desired, { prune: false })).toEqual({
      changes: [{ kind: "plan", id: "pro", action: "update", fields: ["entitlements"] }],
      versionBumps: ["l1", "l2"],
    });
  });

  test("a plan description change bumps no licence", () => {
    const desired = state();
    desired.plans[1] = { ...must(desired.plans[1]), description: "Pro" };
    expect(diffRules(state(), desired, { prune: false }).versionBumps).toEqual([]);
  });

  test("moving a key bumps both licences; revoking bumps its own", () => {
    const desired = state();
    desired.api_keys[0] = { ...must(desired.api_keys[0]), license: "l2" };
    desired.api_keys[1] = { ...must(desired.api_keys[1]), revoked: true };
    expect(diffRules(state(), desired, { prune: false })).toEqual({
      changes: [
        { kind: "api_key", id: "k1", action: "update", fields: ["license"] },
        { kind: "api_key", id: "k2", action: "update", fields: ["revoked"] },
      ],
      versionBumps: ["l1", "l2"],
    });
  });

  test("a key created or pruned bumps its surviving licence", () => {
    const desired = state();
    desired.api_keys = [{ id: "k1", license: "l1", scopes: [], revoked: false }, { id: "k3", license: "l1", scopes: ["a"], revoked: false }];
    const diff = diffRules(state(), desired, { prune: true });
    expect(diff.changes.map((c) => `${c.action} ${c.kind} ${c.id}`)).toEqual(["create api_key k3", "delete api_key k2"]);
    expect(diff.versionBumps).toEqual(["l1", "l2"]);
  });

  test("a licence that is deleted is not bumped, even when its plan changes", () => {
    const desired = state();
    desired.licenses = desired.licenses.slice(0, 1);
    desired.api_keys = desired.api_keys.slice(0, 1);
    desired.plans[1] = { ...must(desired.plans[1]), entitlements: [] };
    expect(diffRules(state(), desired, { prune: true }).versionBumps).toEqual(["l1"]);
  });

  test("a plan change without prune bumps undeclared licences still on it", () => {
    const desired = state();
    desired.licenses = desired.licenses.slice(0, 1);
    desired.api_keys = desired.api_keys.slice(0, 1);
    desired.plans[1] = { ...must(desired.plans[1]), entitlements: [] };
    expect(diffRules(state(), desired, { prune: false }).versionBumps).toEqual(["l1", "l2"]);
  });

  test("scaling policies compare by value, whatever the key order", () => {
    const scaled = (scaling: Record<string, number>): RulesDocument => {
      const doc = state();
      doc.plans[0] = {
        name: "free",
        entitlements: [
          { ...entitlement("nodes", 4), kind: "capacity", scaling: scaling as { min: number; max: number } },
        ],
      };
      return doc;
    };
    expect(diffRules(scaled({ min: 1, max: 8, step: 2 }), scaled({ step: 2, max: 8, min: 1 }), { prune: true }).changes).toEqual([]);
  });

  test("issuer and service token updates name their fields and bump no licence", () => {
    const desired = state();
    desired.issuers[0] = { ...must(desired.issuers[0]), audiences: ["licensing", "other"], leeway_seconds: 30 };
    desired.service_tokens[0] = { ...must(desired.service_tokens[0]), revoked: true };
    expect(diffRules(state(), desired, { prune: false })).toEqual({
      changes: [
        { kind: "issuer", id: "idp", action: "update", fields: ["audiences", "leeway_seconds"] },
        { kind: "service_token", id: "billing", action: "update", fields: ["revoked"] },
      ],
      versionBumps: [],
    });
  });

  test("a second limit on a feature (a rate next to its quota) is a plan update", () => {
    const desired = state();
    const rate: EntitlementRule = { ...entitlement("seats", 5), kind: "rate", period: "second" };
    desired.plans[1] = { ...must(desired.plans[1]), entitlements: [entitlement("reports.export"), rate, entitlement("seats", 5)] };
    expect(diffRules(state(), desired, { prune: false })).toEqual({
      changes: [{ kind: "plan", id: "pro", action: "update", fields: ["entitlements"] }],
      versionBumps: ["l1", "l2"],
    });
  });
});

describe("diffEntitlements", () => {
  test("inserts new features, updates changed ones, removes missing ones", () => {
    const current = [entitlement("a"), entitlement("b", 1), entitlement("c", 1)];
    const desired = [entitlement("b", 2), entitlement("c", 1), entitlement("d")];
    expect(diffEntitlements(current, desired)).toEqual({
      insert: [entitlement("d")],
      update: [entitlement("b", 2)],
      remove: [{ feature: "a", kind: "boolean" }],
    });
  });

  test("entitlements are matched by (feature, kind): another kind on the same feature is another entitlement", () => {
    const quota: EntitlementRule = { ...entitlement("api.calls", 100), kind: "quota", period: "month" };
    const rate: EntitlementRule = { ...entitlement("api.calls", 10), kind: "rate", period: "second" };
    const fasterRate: EntitlementRule = { ...rate, limit: 20 };
    expect(diffEntitlements([quota], [quota, rate])).toEqual({ insert: [rate], update: [], remove: [] });
    expect(diffEntitlements([quota, rate], [quota, fasterRate])).toEqual({ insert: [], update: [fasterRate], remove: [] });
    expect(diffEntitlements([quota, rate], [rate])).toEqual({
      insert: [],
      update: [],
      remove: [{ feature: "api.calls", kind: "quota" }],
    });
  });
});
