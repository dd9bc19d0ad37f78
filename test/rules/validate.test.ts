import { describe, expect, test } from "vitest";
import { formatRuleIssue } from "../../src/rules/errors.js";
import { validateRules } from "../../src/rules/validate.js";

/** A small valid document; tests change one thing at a time. */
function base(): Record<string, unknown> {
  return {
    version: 1,
    accounts: [{ id: "acme", name: "Acme Corp" }],
    plans: [
      {
        name: "pro",
        entitlements: [
          { feature: "reports.export", kind: "boolean" },
          { feature: "api.calls", kind: "quota", limit: 100, period: "month" },
        ],
      },
    ],
    licenses: [{ id: "acme-prod", account: "acme", plan: "pro" }],
    api_keys: [{ id: "acme-backend", license: "acme-prod" }],
  };
}

function withEntitlement(entitlement: Record<string, unknown>): Record<string, unknown> {
  const doc = base();
  doc.plans = [{ name: "pro", entitlements: [entitlement] }];
  return doc;
}

/** The issues of an invalid document, rendered as the admin API sends them. */
function errorsOf(doc: unknown): string[] {
  const result = validateRules(doc);
  if (result.ok) throw new Error("expected the document to be invalid");
  return result.issues.map(formatRuleIssue);
}

describe("validateRules: valid documents", () => {
  test("fills every default and sorts lists", () => {
    const doc = base();
    doc.accounts = [{ id: "zeta", name: "Z" }, { id: "acme", name: "Acme Corp" }];
    doc.licenses = [{ id: "acme-prod", account: "acme", plan: "pro", environments: ["staging", "production"] }];
    const result = validateRules(doc);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.document.accounts.map((a) => a.id)).toEqual(["acme", "zeta"]);
    expect(result.document.licenses[0]).toEqual({
      id: "acme-prod",
      account: "acme",
      plan: "pro",
      status: "active",
      environments: ["production", "staging"],
      overrides: [],
    });
    expect(result.document.plans[0]?.entitlements).toEqual([
      { feature: "api.calls", kind: "quota", limit: 100, period: "month", overage: "block", failure_mode: "fail_closed", roles: [] },
      { feature: "reports.export", kind: "boolean", overage: "block", failure_mode: "fail_closed", roles: [] },
    ]);
    expect(result.document.api_keys[0]).toEqual({ id: "acme-backend", license: "acme-prod", scopes: [], revoked: false });
  });

  test("times are normalized to ISO UTC and null means absent", () => {
    const doc = base();
    doc.licenses = [
      { id: "acme-prod", account: "acme", plan: "pro", valid_from: "2026-01-01T01:00:00+01:00", valid_until: null },
    ];
    const result = validateRules(doc);
    expect(result.ok && result.document.licenses[0]).toMatchObject({ valid_from: "2026-01-01T00:00:00.000Z" });
    expect(result.ok && "valid_until" in (result.document.licenses[0] ?? {})).toBe(false);
  });

  test("a normalized document validates to itself", () => {
    const first = validateRules(base());
    if (!first.ok) throw new Error("base must be valid");
    const second = validateRules(first.document);
    expect(second).toEqual(first);
  });

  test("a capacity entitlement with a scaling policy around its limit is valid", () => {
    const result = validateRules(
      withEntitlement({ feature: "nodes", kind: "capacity", limit: 4, unit_price: 3, scaling: { min: 2, max: 8, target_utilization: 1 } }),
    );
    expect(result.ok).toBe(true);
  });

  test("integers given as bigint (the YAML parser's output) are accepted when safe", () => {
    expect(validateRules(withEntitlement({ feature: "x", kind: "seats", limit: 5n })).ok).toBe(true);
  });
});

describe("validateRules: document and objects", () => {
  test("the document must be a mapping", () => {
    expect(errorsOf(null)).toEqual(["document: must be a mapping"]);
    expect(errorsOf([1])).toEqual(["document: must be a mapping"]);
  });

  test("version is required and must be 1", () => {
    const doc = base();
    delete doc.version;
    expect(errorsOf(doc)).toEqual(["version: required"]);
    expect(errorsOf({ ...base(), version: 2 })).toEqual(["version: must be 1 (the only version this service reads)"]);
  });

  test("unknown keys are errors, with a suggestion for a near miss", () => {
    expect(errorsOf({ ...base(), acounts: [] })).toEqual(['acounts: unknown field (did you mean "accounts"?)']);
    expect(errorsOf(withEntitlement({ feature: "x", kind: "quota", limt: 5, limit: 5, period: "day" }))).toEqual([
      'plans[0].entitlements[0].limt: unknown field (did you mean "limit"?)',
    ]);
    expect(errorsOf({ ...base(), colour: "red" })).toEqual(["colour: unknown field"]);
  });

  test("lists must be lists and their items mappings", () => {
    expect(errorsOf({ ...base(), accounts: { id: "acme" } })).toContain("accounts: must be a list");
    expect(errorsOf({ ...base(), api_keys: ["acme-backend"] })).toEqual(["api_keys[0]: must be a mapping"]);
  });

  test("required fields are named", () => {
    const doc = base();
    doc.licenses = [{ id: "acme-prod", account: "acme" }];
    expect(errorsOf(doc)).toEqual(["licenses[0].plan: required"]);
  });

  test("ids must be slugs", () => {
    const doc = base();
    doc.accounts = [{ id: "Acme", name: "Acme Corp" }, { id: "acme", name: "Acme Corp" }];
    expect(errorsOf(doc)).toEqual([
      'accounts[0].id: must be a slug: lower-case letters, digits, ".", "_" or "-", starting with a letter or digit, at most 63 characters',
    ]);
  });

  test("duplicate ids are errors at the second occurrence", () => {
    const doc = base();
    doc.accounts = [{ id: "acme", name: "A" }, { id: "acme", name: "B" }];
    doc.api_keys = [{ id: "k", license: "acme-prod" }, { id: "k", license: "acme-prod" }];
    expect(errorsOf(doc)).toEqual([
      'accounts[1].id: duplicate id "acme" (first declared at accounts[0])',
      'api_keys[1].id: duplicate id "k" (first declared at api_keys[0])',
    ]);
  });

  test("cross-references resolve within the document", () => {
    const doc = base();
    doc.licenses = [
      { id: "acme-prod", account: "acme", plan: "pro" },
      { id: "acme-dev", account: "nobody", plan: "gold" },
    ];
    doc.api_keys = [{ id: "k", license: "missing" }];
    expect(errorsOf(doc)).toEqual([
      'licenses[1].account: unknown account "nobody"',
      'licenses[1].plan: unknown plan "gold"',
      'api_keys[0].license: unknown license "missing"',
    ]);
  });

  test("a field that is itself wrong does not also produce an unknown-reference error", () => {
    const doc = base();
    doc.licenses = [{ id: "acme-prod", account: 7, plan: "pro" }];
    expect(errorsOf(doc)).toEqual(["licenses[0].account: must be a string"]);
  });

  test("valid_from must be before valid_until", () => {
    const doc = base();
    doc.licenses = [
      { id: "acme-prod", account: "acme", plan: "pro", valid_from: "2027-01-01T00:00:00Z", valid_until: "2026-01-01T00:00:00Z" },
    ];
    expect(errorsOf(doc)).toEqual(["licenses[0].valid_until: must be after valid_from"]);
  });

  test("times must be RFC 3339 with a zone", () => {
    const doc = base();
    doc.api_keys = [
      { id: "a", license: "acme-prod", expires_at: "2026-01-01" },
      { id: "b", license: "acme-prod", expires_at: "2026-02-30T00:00:00Z" },
      { id: "c", license: "acme-prod", expires_at: "2026-01-01T00:00:00" },
    ];
    const message = "must be an RFC 3339 date-time with a time zone, e.g. 2026-01-01T00:00:00Z";
    expect(errorsOf(doc)).toEqual([0, 1, 2].map((i) => `api_keys[${i}].expires_at: ${message}`));
  });

  test("status, revoked and name lists are checked", () => {
    const doc = base();
    doc.licenses = [{ id: "acme-prod", account: "acme", plan: "pro", status: "paused", environments: ["prod", "prod"] }];
    doc.api_keys = [{ id: "k", license: "acme-prod", revoked: "yes", scopes: ["ok", "not ok"] }];
    expect(errorsOf(doc)).toEqual([
      "licenses[0].status: must be one of: active, suspended",
      'licenses[0].environments[1]: duplicate value "prod"',
      'api_keys[0].scopes[1]: must be a name: letters, digits, ".", "_", ":", "/" or "-", starting with a letter or digit, at most 128 characters',
      "api_keys[0].revoked: must be true or false",
    ]);
  });

  test("every error in a document is reported, not just the first", () => {
    const doc = base();
    doc.accounts = [{ id: "acme" }];
    doc.licenses = [{ id: "acme-prod", account: "acme", plan: "gold", status: "x" }];
    expect(errorsOf(doc)).toEqual([
      "accounts[0].name: required",
      "licenses[0].status: must be one of: active, suspended",
      'licenses[0].plan: unknown plan "gold"',
    ]);
  });
});

describe("validateRules: entitlements", () => {
  const at = "plans[0].entitlements[0]";

  test("features must be well-formed, and each (feature, kind) unique within a plan", () => {
    const doc = base();
    doc.plans = [
      {
        name: "pro",
        entitlements: [
          { feature: "a", kind: "boolean" },
          { feature: "a", kind: "boolean" },
          { feature: "-bad", kind: "boolean" },
        ],
      },
    ];
    expect(errorsOf(doc)).toEqual([
      'plans[0].entitlements[2].feature: must be a feature key: letters, digits, ".", "_", ":", "/" or "-", starting with a letter or digit, at most 128 characters',
      'plans[0].entitlements[1].kind: duplicate entitlement: feature "a" already has one of kind boolean (first declared at plans[0].entitlements[0])',
    ]);
  });

  test("each (feature, kind) must be unique within a licence's overrides", () => {
    const doc = base();
    doc.licenses = [
      {
        id: "acme-prod",
        account: "acme",
        plan: "pro",
        overrides: [
          { feature: "x", kind: "seats", limit: 1 },
          { feature: "x", kind: "seats", limit: 2 },
        ],
      },
    ];
    expect(errorsOf(doc)).toEqual([
      'licenses[0].overrides[1].kind: duplicate entitlement: feature "x" already has one of kind seats (first declared at licenses[0].overrides[0])',
    ]);
  });

  test("kind must be known", () => {
    expect(errorsOf(withEntitlement({ feature: "x", kind: "toggle" }))).toEqual([
      `${at}.kind: must be one of: boolean, quota, rate, seats, capacity`,
    ]);
  });

  test("boolean takes no limit, period, burst, unit_price, scaling or overage", () => {
    expect(
      errorsOf(withEntitlement({ feature: "x", kind: "boolean", limit: 1, period: "day", overage: "allow_and_bill", unit_price: 1 })),
    ).toEqual([
      `${at}.limit: not allowed for kind boolean`,
      `${at}.period: not allowed for kind boolean`,
      `${at}.unit_price: not allowed for kind boolean`,
      `${at}.overage: not allowed for kind boolean`,
    ]);
  });

  test("quota needs a limit and an hour/day/month/lifetime period", () => {
    expect(errorsOf(withEntitlement({ feature: "x", kind: "quota" }))).toEqual([
      `${at}.limit: required for kind quota`,
      `${at}.period: required for kind quota`,
    ]);
    expect(errorsOf(withEntitlement({ feature: "x", kind: "quota", limit: 5, period: "second" }))).toEqual([
      `${at}.period: must be one of: hour, day, month, lifetime (kind quota)`,
    ]);
    expect(errorsOf(withEntitlement({ feature: "x", kind: "quota", limit: 5, period: "day", burst: 9 }))).toEqual([
      `${at}.burst: not allowed for kind quota`,
    ]);
  });

  test("rate needs a second/minute period and a burst no smaller than the limit", () => {
    expect(errorsOf(withEntitlement({ feature: "x", kind: "rate", limit: 50, period: "hour" }))).toEqual([
      `${at}.period: must be one of: second, minute (kind rate)`,
    ]);
    expect(errorsOf(withEntitlement({ feature: "x", kind: "rate", limit: 50, period: "second", burst: 49 }))).toEqual([
      `${at}.burst: must be at least limit (50)`,
    ]);
  });

  test("seats needs a limit and takes no period", () => {
    expect(errorsOf(withEntitlement({ feature: "x", kind: "seats", period: "month" }))).toEqual([
      `${at}.limit: required for kind seats`,
      `${at}.period: not allowed for kind seats`,
    ]);
  });

  test("capacity scaling must contain the limit and be well-formed", () => {
    expect(errorsOf(withEntitlement({ feature: "x", kind: "capacity", limit: 4, scaling: { min: 5, max: 3 } }))).toEqual([
      `${at}.scaling.min: must be at most limit (4)`,
      `${at}.scaling.max: must be at least limit (4)`,
    ]);
    expect(
      errorsOf(withEntitlement({ feature: "x", kind: "capacity", limit: 4, scaling: { step: 0, target_utilization: 1.5, mx: 1 } })),
    ).toEqual([
      `${at}.scaling.mx: unknown field (did you mean "max"?)`,
      `${at}.scaling.min: required`,
      `${at}.scaling.max: required`,
      `${at}.scaling.step: must be at least 1`,
      `${at}.scaling.target_utilization: must be greater than 0 and at most 1`,
      // max is missing, read as 0: below the limit.
      `${at}.scaling.max: must be at least limit (4)`,
    ]);
    expect(errorsOf(withEntitlement({ feature: "x", kind: "seats", limit: 4, scaling: { min: 1, max: 5 } }))).toEqual([
      `${at}.scaling: not allowed for kind seats`,
    ]);
  });

  test("threshold mode needs both thresholds, down below up, and excludes target_utilization", () => {
    const capacity = (scaling: Record<string, unknown>) => withEntitlement({ feature: "x", kind: "capacity", limit: 4, scaling: { min: 1, max: 8, ...scaling } });
    expect(validateRules(capacity({ scale_up_threshold: 0.9, scale_down_threshold: 0.3 })).ok).toBe(true);
    expect(errorsOf(capacity({ scale_up_threshold: 0.9 }))).toEqual([`${at}.scaling.scale_down_threshold: required together with the other threshold`]);
    expect(errorsOf(capacity({ scale_up_threshold: 0.5, scale_down_threshold: 0.5, target_utilization: 0.7 }))).toEqual([
      `${at}.scaling.target_utilization: not allowed together with scale_up_threshold/scale_down_threshold (choose one mode)`,
      `${at}.scaling.scale_down_threshold: must be less than scale_up_threshold (0.5)`,
    ]);
    expect(errorsOf(capacity({ scale_up_threshold: 1.2, scale_down_threshold: 1 }))).toEqual([
      `${at}.scaling.scale_up_threshold: must be greater than 0 and at most 1`,
      `${at}.scaling.scale_down_threshold: must be at least 0 and less than 1`,
    ]);
  });

  test("auto mode names its source, a quota feature exactly when the source is quota, and a horizon of at least 1 s", () => {
    const capacity = (auto: unknown) => withEntitlement({ feature: "x", kind: "capacity", limit: 4, scaling: { min: 1, max: 8, auto } });
    const ok = validateRules(capacity({ source: "quota", quota_feature: "api.calls", horizon_seconds: 600 }));
    expect(ok.ok && ok.document.plans[0]?.entitlements[0]?.scaling?.auto).toEqual({ source: "quota", quota_feature: "api.calls", horizon_seconds: 600 });
    expect(validateRules(capacity({ source: "utilization" })).ok).toBe(true);
    expect(errorsOf(capacity({}))).toEqual([`${at}.scaling.auto.source: required`]);
    expect(errorsOf(capacity({ source: "quota", horizon_seconds: 0 }))).toEqual([
      `${at}.scaling.auto.quota_feature: required when source is quota`,
      `${at}.scaling.auto.horizon_seconds: must be at least 1`,
    ]);
    expect(errorsOf(capacity({ source: "utilization", quota_feature: "api.calls" }))).toEqual([
      `${at}.scaling.auto.quota_feature: allowed only when source is quota`,
    ]);
    expect(errorsOf(capacity({ source: "cpu" }))).toEqual([`${at}.scaling.auto.source: must be one of: utilization, quota`]);
  });

  test("integers must be safe and non-negative", () => {
    expect(errorsOf(withEntitlement({ feature: "x", kind: "seats", limit: -1 }))).toEqual([`${at}.limit: must be an integer >= 0`]);
    expect(errorsOf(withEntitlement({ feature: "x", kind: "seats", limit: 1.5 }))).toEqual([`${at}.limit: must be an integer >= 0`]);
    expect(errorsOf(withEntitlement({ feature: "x", kind: "seats", limit: 2n ** 53n }))).toEqual([
      `${at}.limit: must be at most 9007199254740991`,
    ]);
    expect(errorsOf(withEntitlement({ feature: "x", kind: "quota", limit: 1, period: "day", unit_price: "2" }))).toEqual([
      `${at}.unit_price: must be an integer >= 0`,
    ]);
  });

  test("overage, failure_mode and roles are checked", () => {
    expect(
      errorsOf(withEntitlement({ feature: "x", kind: "seats", limit: 1, overage: "bill", failure_mode: "open", roles: "admin" })),
    ).toEqual([
      `${at}.overage: must be one of: block, allow_and_bill`,
      `${at}.failure_mode: must be one of: fail_closed, fail_open`,
      `${at}.roles: must be a list`,
    ]);
  });
});
