/**
 * The rules file's issuers and service_tokens lists, and entitlements keyed by (feature, kind):
 * validation (every error path and message), then apply / export / prune / dry run against a
 * real database (PGlite always; PostgreSQL when DATABASE_URL is set).
 */
import type { Kysely } from "kysely";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { hashServiceToken } from "../../src/licensing/credentials/service-token-secrets.js";
import { applyRules, type ApplyOptions } from "../../src/rules/apply.js";
import { formatRuleIssue, RulesError } from "../../src/rules/errors.js";
import { exportRules, formatRules } from "../../src/rules/export.js";
import { parseRules } from "../../src/rules/parse.js";
import { validateRules } from "../../src/rules/validate.js";
import type { Database } from "../../src/store/schema.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";

function issuer(fields: Record<string, unknown> = {}): Record<string, unknown> {
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

function doc(fields: Record<string, unknown>): Record<string, unknown> {
  return { version: 1, ...fields };
}

function errorsOf(input: unknown): string[] {
  const result = validateRules(input);
  if (result.ok) throw new Error("expected the document to be invalid");
  return result.issues.map(formatRuleIssue);
}

describe("validateRules: issuers", () => {
  test("defaults are filled: algorithms [RS256], leeway 60 s, roles claim \"roles\"; lists are sorted", () => {
    const result = validateRules(doc({ issuers: [issuer({ audiences: ["z", "a"] })] }));
    expect(result.ok && result.document.issuers).toEqual([
      {
        id: "idp",
        issuer: "https://idp.example",
        jwks_url: "https://idp.example/jwks.json",
        audiences: ["a", "z"],
        algorithms: ["RS256"],
        leeway_seconds: 60,
        license_claim: "license_id",
        roles_claim: "roles",
      },
    ]);
  });

  test("every asymmetric algorithm, an account claim and a nested roles claim are accepted", () => {
    const all = ["RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"];
    const result = validateRules(
      doc({ issuers: [issuer({ algorithms: all, license_claim: undefined, account_claim: "tenant", roles_claim: "realm_access.roles", leeway_seconds: 0 })] }),
    );
    expect(result.ok).toBe(true);
    expect(result.ok && result.document.issuers[0]).toMatchObject({ account_claim: "tenant", leeway_seconds: 0, algorithms: [...all].sort() });
  });

  test("id, issuer, jwks_url and audiences are required", () => {
    expect(errorsOf(doc({ issuers: [{ license_claim: "l" }] }))).toEqual([
      "issuers[0].id: required",
      "issuers[0].issuer: required",
      "issuers[0].jwks_url: required",
      "issuers[0].audiences: required (at least one audience)",
    ]);
  });

  test("jwks_url must be an http(s) URL without credentials", () => {
    expect(errorsOf(doc({ issuers: [issuer({ jwks_url: "ftp://idp.example/jwks" })] }))).toEqual([
      "issuers[0].jwks_url: must be an http:// or https:// URL of at most 2048 characters",
    ]);
    expect(errorsOf(doc({ issuers: [issuer({ jwks_url: "not a url" })] }))).toEqual([
      "issuers[0].jwks_url: must be an http:// or https:// URL of at most 2048 characters",
    ]);
    expect(errorsOf(doc({ issuers: [issuer({ jwks_url: "https://user:pw@idp.example/jwks" })] }))).toEqual([
      "issuers[0].jwks_url: must not contain a user name or password",
    ]);
  });

  test("audiences must list at least one distinct audience", () => {
    expect(errorsOf(doc({ issuers: [issuer({ audiences: [] })] }))).toEqual(["issuers[0].audiences: must list at least one audience"]);
    expect(errorsOf(doc({ issuers: [issuer({ audiences: ["a", "a"] })] }))).toEqual(['issuers[0].audiences[1]: duplicate value "a"']);
  });

  test('alg "none" is refused, with the reason', () => {
    expect(errorsOf(doc({ issuers: [issuer({ algorithms: ["none"] })] }))).toEqual([
      'issuers[0].algorithms[0]: "none" is never allowed: unsigned tokens prove nothing',
    ]);
  });

  test("HS* algorithms are refused, with the reason", () => {
    expect(errorsOf(doc({ issuers: [issuer({ algorithms: ["RS256", "HS256"] })] }))).toEqual([
      'issuers[0].algorithms[1]: "HS256" is not allowed: shared-secret (HS*) algorithms cannot be verified with a public key set',
    ]);
  });

  test("unknown, duplicate or no algorithms are refused", () => {
    expect(errorsOf(doc({ issuers: [issuer({ algorithms: ["RS1", "RS256", "RS256"] })] }))).toEqual([
      "issuers[0].algorithms[0]: must be one of: RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, ES512, EdDSA",
      'issuers[0].algorithms[2]: duplicate value "RS256"',
    ]);
    expect(errorsOf(doc({ issuers: [issuer({ algorithms: [] })] }))).toEqual(["issuers[0].algorithms: must list at least one algorithm"]);
  });

  test("leeway_seconds is 0..600", () => {
    expect(errorsOf(doc({ issuers: [issuer({ leeway_seconds: 601 })] }))).toEqual(["issuers[0].leeway_seconds: must be at most 600"]);
    expect(errorsOf(doc({ issuers: [issuer({ leeway_seconds: -1 })] }))).toEqual(["issuers[0].leeway_seconds: must be an integer >= 0"]);
  });

  test("exactly one of license_claim and account_claim", () => {
    expect(errorsOf(doc({ issuers: [issuer({ account_claim: "tenant" })] }))).toEqual([
      "issuers[0].account_claim: not allowed together with license_claim (set exactly one)",
    ]);
    expect(errorsOf(doc({ issuers: [issuer({ license_claim: undefined })] }))).toEqual([
      "issuers[0]: must set exactly one of license_claim and account_claim",
    ]);
  });

  test("claim names may not contain spaces", () => {
    expect(errorsOf(doc({ issuers: [issuer({ roles_claim: "my roles" })] }))).toEqual([
      "issuers[0].roles_claim: must be a claim name: 1 to 256 characters without spaces",
    ]);
  });

  test("ids and iss values are unique among issuers", () => {
    expect(errorsOf(doc({ issuers: [issuer(), issuer({ jwks_url: "https://other.example/jwks" })] }))).toEqual([
      'issuers[1].id: duplicate id "idp" (first declared at issuers[0])',
      'issuers[1].issuer: duplicate issuer "https://idp.example" (first declared at issuers[0])',
    ]);
  });

  test("unknown fields get a suggestion", () => {
    expect(errorsOf(doc({ issuers: [issuer({ audience: ["x"] })] }))).toEqual([
      'issuers[0].audience: unknown field (did you mean "audiences"?)',
    ]);
  });
});

describe("validateRules: service tokens", () => {
  test("a valid token is normalized", () => {
    const result = validateRules(doc({ service_tokens: [{ id: "billing", rights: ["license_id"], expires_at: "2027-01-01T01:00:00+01:00" }] }));
    expect(result.ok && result.document.service_tokens).toEqual([
      { id: "billing", rights: ["license_id"], expires_at: "2027-01-01T00:00:00.000Z", revoked: false },
    ]);
  });

  test("rights are required, non-empty and known", () => {
    expect(errorsOf(doc({ service_tokens: [{ id: "a" }] }))).toEqual(["service_tokens[0].rights: required (one or more of: license_id)"]);
    expect(errorsOf(doc({ service_tokens: [{ id: "a", rights: [] }] }))).toEqual(["service_tokens[0].rights: must list at least one right"]);
    expect(errorsOf(doc({ service_tokens: [{ id: "a", rights: ["admin"] }] }))).toEqual([
      "service_tokens[0].rights[0]: must be one of: license_id",
    ]);
  });

  test("id, expires_at and revoked are checked, ids are unique", () => {
    expect(
      errorsOf(
        doc({
          service_tokens: [
            { id: "Bad", rights: ["license_id"] },
            { id: "a", rights: ["license_id"], expires_at: "soon", revoked: "yes" },
            { id: "a", rights: ["license_id"] },
          ],
        }),
      ),
    ).toEqual([
      'service_tokens[0].id: must be a slug: lower-case letters, digits, ".", "_" or "-", starting with a letter or digit, at most 63 characters',
      "service_tokens[1].revoked: must be true or false",
      "service_tokens[1].expires_at: must be an RFC 3339 date-time with a time zone, e.g. 2026-01-01T00:00:00Z",
      'service_tokens[2].id: duplicate id "a" (first declared at service_tokens[1])',
    ]);
  });
});

describe("validateRules: several limits per feature", () => {
  const plan = (entitlements: unknown[]) => doc({ plans: [{ name: "pro", entitlements }] });

  test("a feature may carry one limit per kind, sorted by feature then kind", () => {
    const result = validateRules(
      plan([
        { feature: "api.calls", kind: "rate", limit: 10, period: "second" },
        { feature: "api.calls", kind: "quota", limit: 1000, period: "month" },
      ]),
    );
    expect(result.ok && result.document.plans[0]?.entitlements.map((e) => `${e.feature}/${e.kind}`)).toEqual([
      "api.calls/quota",
      "api.calls/rate",
    ]);
  });

  test("two limits of the same kind on a feature are an error at the second", () => {
    expect(
      errorsOf(
        plan([
          { feature: "api.calls", kind: "quota", limit: 1000, period: "month" },
          { feature: "api.calls", kind: "rate", limit: 10, period: "second" },
          { feature: "api.calls", kind: "quota", limit: 50, period: "day" },
        ]),
      ),
    ).toEqual([
      'plans[0].entitlements[2].kind: duplicate entitlement: feature "api.calls" already has one of kind quota (first declared at plans[0].entitlements[0])',
    ]);
  });

  test("an entitlement with an invalid kind is not also reported as a duplicate", () => {
    expect(errorsOf(plan([{ feature: "x", kind: "boolean" }, { feature: "x", kind: "toggle" }]))).toEqual([
      "plans[0].entitlements[1].kind: must be one of: boolean, quota, rate, seats, capacity",
    ]);
  });
});

const T0 = new Date("2026-03-01T12:00:00.000Z");
const T1 = new Date("2026-03-02T12:00:00.000Z");

const BASE = `version: 1
accounts:
  - id: acme
    name: Acme
plans:
  - name: pro
    entitlements:
      - feature: api.calls
        kind: quota
        limit: 1000
        period: month
      - feature: api.calls
        kind: rate
        limit: 10
        period: second
licenses:
  - id: acme-prod
    account: acme
    plan: pro
    overrides:
      - feature: api.calls
        kind: quota
        limit: 5000
        period: month
issuers:
  - id: acme-idp
    issuer: https://login.acme.example/
    jwks_url: https://login.acme.example/jwks.json
    audiences: [licensing]
    license_claim: license_id
  - id: globex-idp
    issuer: https://sso.globex.example/
    jwks_url: https://sso.globex.example/certs
    audiences: [licensing, https://api.globex.example]
    algorithms: [ES256, RS256]
    leeway_seconds: 30
    account_claim: tenant
    roles_claim: scope
service_tokens:
  - id: billing
    rights: [license_id]
`;

function opts(overrides: Partial<ApplyOptions> = {}): ApplyOptions {
  return { prune: false, dryRun: false, now: T0, ...overrides };
}

describe.each(testBackends())("issuers, service tokens and multi-kind entitlements on %s", (backend) => {
  let store: TestStore;
  let db: Kysely<Database>;

  beforeEach(async () => {
    store = await createTestStore(backend);
    db = store.db;
  });
  afterEach(() => store.drop());

  async function rows() {
    return {
      issuers: await db.selectFrom("issuers").selectAll().orderBy("id").execute(),
      service_tokens: await db.selectFrom("service_tokens").selectAll().orderBy("id").execute(),
      entitlements: await db.selectFrom("entitlements").selectAll().orderBy("id").execute(),
    };
  }

  test("apply creates issuers as declared, with defaults spelled out in the rows", async () => {
    const result = await applyRules(db, parseRules(BASE), opts());
    expect(result.changes.filter((c) => c.kind === "issuer" || c.kind === "service_token")).toEqual([
      { kind: "issuer", id: "acme-idp", action: "create", fields: [] },
      { kind: "issuer", id: "globex-idp", action: "create", fields: [] },
      { kind: "service_token", id: "billing", action: "create", fields: [] },
    ]);
    const [acme, globex] = (await rows()).issuers;
    expect(acme).toMatchObject({
      issuer: "https://login.acme.example/",
      audiences: ["licensing"],
      algorithms: ["RS256"],
      leeway_seconds: 60,
      license_claim: "license_id",
      account_claim: null,
      roles_claim: "roles",
    });
    expect(globex).toMatchObject({ algorithms: ["ES256", "RS256"], leeway_seconds: 30, license_claim: null, account_claim: "tenant", roles_claim: "scope" });
  });

  test("a new service token's secret (lk_svc_...) is returned once, kind service_token, and only its SHA-256 is stored", async () => {
    const { issuedKeys } = await applyRules(db, parseRules(BASE), opts());
    expect(issuedKeys).toHaveLength(1);
    const [token] = issuedKeys;
    expect(token).toMatchObject({ kind: "service_token", id: "billing", licenseId: "" });
    expect(token?.secret).toMatch(/^lk_svc_[0-9A-Za-z]{43}$/);
    expect(token?.prefix).toBe(token?.secret.slice(0, 12));
    const row = (await rows()).service_tokens[0];
    expect(row?.secret_hash).toBe(hashServiceToken(token?.secret ?? ""));
    expect(row?.rights).toEqual(["license_id"]);
    expect(JSON.stringify(await rows())).not.toContain(token?.secret);
    expect(formatRules(await exportRules(db), "yaml")).not.toContain(token?.secret.slice(12));
  });

  test("api keys and service tokens created together come back sorted by kind, then id", async () => {
    const withKey = `${BASE}api_keys:\n  - id: zz-key\n    license: acme-prod\n`;
    const { issuedKeys } = await applyRules(db, parseRules(withKey), opts());
    expect(issuedKeys.map((k) => [k.kind, k.id, k.licenseId])).toEqual([
      ["api_key", "zz-key", "acme-prod"],
      ["service_token", "billing", ""],
    ]);
  });

  test("a dry run issues no service token secret and writes nothing", async () => {
    const result = await applyRules(db, parseRules(BASE), opts({ dryRun: true }));
    expect(result.issuedKeys).toEqual([]);
    expect(result.changes.some((c) => c.kind === "service_token")).toBe(true);
    expect(await rows()).toEqual({ issuers: [], service_tokens: [], entitlements: [] });
  });

  test("a feature's quota and rate are stored as two rows; the override replaces only the quota's row", async () => {
    await applyRules(db, parseRules(BASE), opts());
    const entitlements = (await rows()).entitlements.map((e) => [e.plan ?? `license:${e.license_id}`, e.feature, e.kind, Number(e.limit)]);
    expect(entitlements.sort()).toEqual([
      ["license:acme-prod", "api.calls", "quota", 5000],
      ["pro", "api.calls", "quota", 1000],
      ["pro", "api.calls", "rate", 10],
    ]);
  });

  test("changing one kind's limit updates that row in place and leaves the other kind alone", async () => {
    await applyRules(db, parseRules(BASE), opts());
    const before = (await rows()).entitlements;
    const changed = BASE.replace("limit: 10\n", "limit: 20\n");
    const result = await applyRules(db, parseRules(changed), opts({ now: T1 }));
    expect(result.changes).toEqual([{ kind: "plan", id: "pro", action: "update", fields: ["entitlements"] }]);
    const after = (await rows()).entitlements;
    expect(after.map((e) => e.id)).toEqual(before.map((e) => e.id));
    const rate = after.find((e) => e.plan === "pro" && e.kind === "rate");
    const quota = after.find((e) => e.plan === "pro" && e.kind === "quota");
    expect(Number(rate?.limit)).toBe(20);
    expect(quota?.updated_at.toISOString()).toBe(T0.toISOString());
  });

  test("removing one kind of a feature deletes only that row", async () => {
    await applyRules(db, parseRules(BASE), opts());
    const withoutRate = BASE.replace("      - feature: api.calls\n        kind: rate\n        limit: 10\n        period: second\n", "");
    await applyRules(db, parseRules(withoutRate), opts());
    const plan = (await rows()).entitlements.filter((e) => e.plan === "pro").map((e) => e.kind);
    expect(plan).toEqual(["quota"]);
  });

  test("applying the same document twice changes nothing, and export then apply is a no-op", async () => {
    await applyRules(db, parseRules(BASE), opts());
    const before = await rows();
    expect(await applyRules(db, parseRules(BASE), opts({ now: T1, prune: true }))).toEqual({ changes: [], issuedKeys: [] });
    for (const format of ["yaml", "json"] as const) {
      const text = formatRules(await exportRules(db), format);
      expect(await applyRules(db, parseRules(text), opts({ now: T1, prune: true }))).toEqual({ changes: [], issuedKeys: [] });
    }
    expect(await rows()).toEqual(before);
  });

  test("export omits issuer defaults and matches what was applied", async () => {
    await applyRules(db, parseRules(BASE), opts());
    const exported = await exportRules(db);
    expect(exported).toEqual(parseRules(BASE));
    const text = formatRules(exported, "yaml");
    expect(text).not.toContain("leeway_seconds: 60");
    expect(text).not.toContain("roles_claim: roles");
    expect(text).toContain("algorithms: [ES256, RS256]");
    expect(text).toContain("rights: [license_id]");
  });

  test("an issuer update names the changed fields; revoking a service token records the time once", async () => {
    await applyRules(db, parseRules(BASE), opts());
    const changed = BASE.replace("    leeway_seconds: 30\n", "    leeway_seconds: 10\n").replace(
      "  - id: billing\n    rights: [license_id]\n",
      "  - id: billing\n    rights: [license_id]\n    revoked: true\n",
    );
    const result = await applyRules(db, parseRules(changed), opts({ now: T1 }));
    expect(result).toEqual({
      changes: [
        { kind: "issuer", id: "globex-idp", action: "update", fields: ["leeway_seconds"] },
        { kind: "service_token", id: "billing", action: "update", fields: ["revoked"] },
      ],
      issuedKeys: [],
    });
    const token = (await rows()).service_tokens[0];
    expect(token?.revoked_at?.toISOString()).toBe(T1.toISOString());
    // Issuers and service tokens belong to no licence: no version bump.
    const license = await db.selectFrom("licenses").select("version").executeTakeFirstOrThrow();
    expect(Number(license.version)).toBe(1);
  });

  test("prune deletes undeclared issuers and service tokens; without prune they stay", async () => {
    await applyRules(db, parseRules(BASE), opts());
    const smaller = BASE.split("issuers:")[0] ?? "";
    expect((await applyRules(db, parseRules(smaller), opts())).changes).toEqual([]);
    const pruned = await applyRules(db, parseRules(smaller), opts({ prune: true }));
    expect(pruned.changes).toEqual([
      { kind: "service_token", id: "billing", action: "delete", fields: [] },
      { kind: "issuer", id: "acme-idp", action: "delete", fields: [] },
      { kind: "issuer", id: "globex-idp", action: "delete", fields: [] },
    ]);
    expect(await rows()).toMatchObject({ issuers: [], service_tokens: [] });
  });

  test("renaming an issuer (same iss, new id) works with prune", async () => {
    await applyRules(db, parseRules(BASE), opts());
    const renamed = BASE.replace("  - id: acme-idp\n", "  - id: acme-login\n");
    const result = await applyRules(db, parseRules(renamed), opts({ prune: true }));
    expect(result.changes.map((c) => `${c.action} ${c.kind} ${c.id}`)).toEqual(["create issuer acme-login", "delete issuer acme-idp"]);
    expect((await rows()).issuers.map((i) => [i.id, i.issuer])).toEqual([
      ["acme-login", "https://login.acme.example/"],
      ["globex-idp", "https://sso.globex.example/"],
    ]);
  });

  test("without prune, an iss already held by an undeclared issuer is a rules error naming both, and nothing is written", async () => {
    await applyRules(db, parseRules(BASE), opts());
    const before = await rows();
    const renamed = BASE.replace("  - id: acme-idp\n", "  - id: acme-login\n");
    const error = await applyRules(db, parseRules(renamed), opts()).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(RulesError);
    expect((error as RulesError).lines()).toEqual([
      'issuers[0].issuer: "https://login.acme.example/" is already the issuer of "acme-idp" in the database, which this document does not declare: declare or remove it, or apply with prune',
    ]);
    expect(await rows()).toEqual(before);
  });

  test("two issuers can swap their iss values in one apply", async () => {
    await applyRules(db, parseRules(BASE), opts());
    const swapped = BASE.replace("issuer: https://login.acme.example/", "issuer: SWAP")
      .replace("issuer: https://sso.globex.example/", "issuer: https://login.acme.example/")
      .replace("issuer: SWAP", "issuer: https://sso.globex.example/");
    const result = await applyRules(db, parseRules(swapped), opts());
    expect(result.changes.map((c) => `${c.action} ${c.kind} ${c.id} ${c.fields.join(",")}`)).toEqual([
      "update issuer acme-idp issuer",
      "update issuer globex-idp issuer",
    ]);
    expect((await rows()).issuers.map((i) => [i.id, i.issuer])).toEqual([
      ["acme-idp", "https://sso.globex.example/"],
      ["globex-idp", "https://login.acme.example/"],
    ]);
  });
});
