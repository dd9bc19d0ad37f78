/**
 * schemas/rules.schema.json (for editors) and the validator must agree: every example is
 * accepted by both, and a set of invalid documents is rejected by both.
 */
import { readdirSync, readFileSync } from "node:fs";
import { Ajv2020 } from "ajv/dist/2020.js";
import { describe, expect, test } from "vitest";
import { parse } from "yaml";
import { validateRules } from "../../src/rules/validate.js";

const schema: unknown = JSON.parse(readFileSync("schemas/rules.schema.json", "utf8"));
const ajv = new Ajv2020({ allErrors: true, strict: true, allowUnionTypes: true });
const validateSchema = ajv.compile(schema as object);

const examples = readdirSync("examples").filter((f) => f.endsWith(".yaml"));

const valid = {
  version: 1,
  accounts: [{ id: "acme", name: "Acme" }],
  plans: [{ name: "pro", entitlements: [{ feature: "api.calls", kind: "quota", limit: 5, period: "month" }] }],
  licenses: [{ id: "l", account: "acme", plan: "pro" }],
  api_keys: [{ id: "k", license: "l" }],
  issuers: [
    { id: "idp", issuer: "https://idp.example", jwks_url: "https://idp.example/jwks.json", audiences: ["licensing"], license_claim: "license_id" },
  ],
  service_tokens: [{ id: "billing", rights: ["license_id"] }],
};

function withEntitlement(entitlement: Record<string, unknown>): unknown {
  return { ...valid, plans: [{ name: "pro", entitlements: [entitlement] }] };
}

const invalid: Record<string, unknown> = {
  "missing version": { accounts: [] },
  "wrong version": { version: 2 },
  "unknown top-level key": { ...valid, extra: true },
  "unknown account key": { ...valid, accounts: [{ id: "acme", name: "Acme", nmae: "x" }] },
  "upper-case slug": { ...valid, accounts: [{ id: "Acme", name: "Acme" }] },
  "boolean with a limit": withEntitlement({ feature: "x", kind: "boolean", limit: 1 }),
  "quota without a period": withEntitlement({ feature: "x", kind: "quota", limit: 1 }),
  "quota with a rate period": withEntitlement({ feature: "x", kind: "quota", limit: 1, period: "second" }),
  "rate with a quota period": withEntitlement({ feature: "x", kind: "rate", limit: 1, period: "day" }),
  "seats with a period": withEntitlement({ feature: "x", kind: "seats", limit: 1, period: "day" }),
  "negative limit": withEntitlement({ feature: "x", kind: "seats", limit: -1 }),
  "fractional limit": withEntitlement({ feature: "x", kind: "seats", limit: 1.5 }),
  "unknown kind": withEntitlement({ feature: "x", kind: "toggle" }),
  "scaling on seats": withEntitlement({ feature: "x", kind: "seats", limit: 1, scaling: { min: 0, max: 2 } }),
  "scaling without max": withEntitlement({ feature: "x", kind: "capacity", limit: 1, scaling: { min: 0 } }),
  "target utilization above 1": withEntitlement({
    feature: "x", kind: "capacity", limit: 1, scaling: { min: 0, max: 2, target_utilization: 1.5 },
  }),
  "only one scaling threshold": withEntitlement({
    feature: "x", kind: "capacity", limit: 1, scaling: { min: 0, max: 2, scale_up_threshold: 0.9 },
  }),
  "thresholds with a target utilization": withEntitlement({
    feature: "x", kind: "capacity", limit: 1,
    scaling: { min: 0, max: 2, target_utilization: 0.8, scale_up_threshold: 0.9, scale_down_threshold: 0.2 },
  }),
  "auto from a quota without its feature": withEntitlement({
    feature: "x", kind: "capacity", limit: 1, scaling: { min: 0, max: 2, auto: { source: "quota" } },
  }),
  "auto with an unknown source": withEntitlement({
    feature: "x", kind: "capacity", limit: 1, scaling: { min: 0, max: 2, auto: { source: "cpu" } },
  }),
  "bad time": { ...valid, api_keys: [{ id: "k", license: "l", expires_at: "tomorrow" }] },
  "bad status": { ...valid, licenses: [{ id: "l", account: "acme", plan: "pro", status: "paused" }] },
  "duplicate scope": { ...valid, api_keys: [{ id: "k", license: "l", scopes: ["a", "a"] }] },
  "issuer without audiences": { ...valid, issuers: [issuer({ audiences: [] })] },
  "issuer allowing alg none": { ...valid, issuers: [issuer({ algorithms: ["none"] })] },
  "issuer allowing HS256": { ...valid, issuers: [issuer({ algorithms: ["RS256", "HS256"] })] },
  "issuer with a leeway above 600": { ...valid, issuers: [issuer({ leeway_seconds: 601 })] },
  "issuer with both claims": { ...valid, issuers: [issuer({ account_claim: "tenant" })] },
  "issuer with neither claim": { ...valid, issuers: [issuer({ license_claim: undefined })] },
  "issuer with a non-http JWKS URL": { ...valid, issuers: [issuer({ jwks_url: "ftp://idp.example/jwks" })] },
  "service token without rights": { ...valid, service_tokens: [{ id: "billing" }] },
  "service token with an unknown right": { ...valid, service_tokens: [{ id: "billing", rights: ["admin"] }] },
};

function issuer(fields: Record<string, unknown>): Record<string, unknown> {
  const base: Record<string, unknown> = {
    id: "idp",
    issuer: "https://idp.example",
    jwks_url: "https://idp.example/jwks.json",
    audiences: ["licensing"],
    license_claim: "license_id",
    ...fields,
  };
  return Object.fromEntries(Object.entries(base).filter(([, v]) => v !== undefined));
}

describe("rules JSON Schema", () => {
  test.each(examples)("accepts examples/%s, as the validator does", (file) => {
    const doc: unknown = parse(readFileSync(`examples/${file}`, "utf8"));
    expect(validateSchema(doc), JSON.stringify(validateSchema.errors)).toBe(true);
    expect(validateRules(doc).ok).toBe(true);
  });

  test("accepts a capacity with thresholds and auto mode, as the validator does", () => {
    const doc = withEntitlement({
      feature: "x", kind: "capacity", limit: 1,
      scaling: { min: 0, max: 2, scale_up_threshold: 0.9, scale_down_threshold: 0.2, auto: { source: "quota", quota_feature: "api.calls", horizon_seconds: 60 } },
    });
    expect(validateSchema(doc), JSON.stringify(validateSchema.errors)).toBe(true);
    expect(validateRules(doc).ok).toBe(true);
  });

  test("accepts the minimal valid document", () => {
    expect(validateSchema(valid)).toBe(true);
    expect(validateRules(valid).ok).toBe(true);
  });

  test.each(Object.entries(invalid))("rejects a document with %s, as the validator does", (_name, doc) => {
    expect(validateSchema(doc)).toBe(false);
    expect(validateRules(doc).ok).toBe(false);
  });
});
