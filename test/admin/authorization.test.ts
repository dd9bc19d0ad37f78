/**
 * The admin authorization matrix: the operator may do everything; an account admin token sees
 * and changes its own account only (other accounts' objects are NOT_FOUND, filters naming them
 * and operator-only RPCs PERMISSION_DENIED); no token, garbage, a revoked token, an API key or a
 * service token is UNAUTHENTICATED. Every AdminService RPC is exercised, and B's state is checked
 * unchanged after A's attempts.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AdminService } from "../../src/gen/licensing/admin/v1/admin_pb.js";
import { Decision } from "../../src/gen/licensing/v1/licensing_pb.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { OPERATOR_TOKEN, startHarness, type Harness } from "./harness.js";

const RULES = `
version: 1
accounts:
  - { id: acme, name: Acme }
  - { id: globex, name: Globex }
plans:
  - name: acme-plan
    entitlements:
      - { feature: reports.export, kind: boolean }
      - { feature: api.calls, kind: quota, limit: 1000, period: month }
  - name: globex-plan
    entitlements:
      - { feature: reports.export, kind: boolean }
licenses:
  - { id: acme-prod, account: acme, plan: acme-plan }
  - { id: globex-prod, account: globex, plan: globex-plan }
api_keys:
  - { id: acme-key, license: acme-prod }
  - { id: globex-key, license: globex-prod }
service_tokens:
  - { id: billing, rights: [license_id] }
`;

type AdminClient = ReturnType<Harness["admin"]>;
type Call = (client: AdminClient) => Promise<unknown>;

async function codeOf(promise: Promise<unknown>): Promise<Code | "OK"> {
  try {
    await promise;
    return "OK";
  } catch (error) {
    if (error instanceof ConnectError) return error.code;
    throw error;
  }
}

const FUTURE = { seconds: BigInt(Math.floor(Date.UTC(2099, 0, 1) / 1000)), nanos: 0 };

/** Calls aimed at globex (account B), with what account A's token must get. */
const AGAINST_B: ReadonlyArray<[string, Call, Code]> = [
  ["GetAccount", (c) => c.getAccount({ accountId: "globex" }), Code.NotFound],
  ["GetPlan", (c) => c.getPlan({ name: "globex-plan" }), Code.NotFound],
  ["ListLicenses filtered to B", (c) => c.listLicenses({ accountId: "globex" }), Code.PermissionDenied],
  ["GetLicense", (c) => c.getLicense({ licenseId: "globex-prod" }), Code.NotFound],
  ["SuspendLicense", (c) => c.suspendLicense({ licenseId: "globex-prod" }), Code.NotFound],
  ["ReinstateLicense", (c) => c.reinstateLicense({ licenseId: "globex-prod" }), Code.NotFound],
  ["RenewLicense", (c) => c.renewLicense({ licenseId: "globex-prod", validUntil: FUTURE }), Code.NotFound],
  ["CreateApiKey", (c) => c.createApiKey({ licenseId: "globex-prod" }), Code.NotFound],
  ["ListApiKeys filtered to B", (c) => c.listApiKeys({ licenseId: "globex-prod" }), Code.NotFound],
  ["RevokeApiKey", (c) => c.revokeApiKey({ keyId: "globex-key" }), Code.NotFound],
  ["ListDecisions filtered to B", (c) => c.listDecisions({ licenseId: "globex-prod" }), Code.NotFound],
  ["GetLicenseStatus", (c) => c.getLicenseStatus({ licenseId: "globex-prod" }), Code.NotFound],
];

/** Operator-only calls: PERMISSION_DENIED for any account token. */
const OPERATOR_ONLY: ReadonlyArray<[string, Call]> = [
  ["ListIssuers", (c) => c.listIssuers({})],
  ["CreateAccountAdminToken", (c) => c.createAccountAdminToken({ accountId: "globex" })],
  ["ListAccountAdminTokens", (c) => c.listAccountAdminTokens({})],
  ["RevokeAccountAdminToken", (c) => c.revokeAccountAdminToken({ id: "globex-admin" })],
  ["Apply", (c) => c.apply({ document: RULES, dryRun: true })],
  ["Export", (c) => c.export({})],
  ["IssueLicenseToken", (c) => c.issueLicenseToken({ licenseId: "globex-prod" })],
  ["RotateSigningKey", (c) => c.rotateSigningKey({})],
  ["ListSigningKeys", (c) => c.listSigningKeys({})],
  ["RetireSigningKey", (c) => c.retireSigningKey({ kid: "none" })],
];

/** Every issue-7 RPC aimed at acme (A itself): what A's token may do. */
const OWN: ReadonlyArray<[string, Call]> = [
  ["ListAccounts", (c) => c.listAccounts({})],
  ["GetAccount", (c) => c.getAccount({ accountId: "acme" })],
  ["ListPlans", (c) => c.listPlans({})],
  ["GetPlan", (c) => c.getPlan({ name: "acme-plan" })],
  ["ListLicenses", (c) => c.listLicenses({ accountId: "acme" })],
  ["GetLicense", (c) => c.getLicense({ licenseId: "acme-prod" })],
  ["SuspendLicense", (c) => c.suspendLicense({ licenseId: "acme-prod" })],
  ["ReinstateLicense", (c) => c.reinstateLicense({ licenseId: "acme-prod" })],
  ["RenewLicense", (c) => c.renewLicense({ licenseId: "acme-prod", validUntil: FUTURE })],
  ["CreateApiKey", (c) => c.createApiKey({ licenseId: "acme-prod" })],
  ["ListApiKeys", (c) => c.listApiKeys({ licenseId: "acme-prod" })],
  ["RevokeApiKey", (c) => c.revokeApiKey({ keyId: "acme-key" })],
  ["ListDecisions", (c) => c.listDecisions({ licenseId: "acme-prod" })],
  ["GetLicenseStatus", (c) => c.getLicenseStatus({ licenseId: "acme-prod" })],
];

describe.each(testBackends())("admin authorization matrix on %s", (backend) => {
  let store: TestStore;
  let harness: Harness;
  let acmeToken: string;
  let revokedToken: string;
  let apiKey: string;
  let serviceToken: string;

  beforeAll(async () => {
    store = await createTestStore(backend);
    harness = await startHarness(store);
    const keys = await harness.apply(RULES);
    apiKey = keys.get("acme-key")?.secret ?? "";
    serviceToken = keys.get("billing")?.secret ?? "";
    const operator = harness.admin(OPERATOR_TOKEN);
    acmeToken = (await operator.createAccountAdminToken({ accountId: "acme", id: "acme-admin" })).secret;
    await operator.createAccountAdminToken({ accountId: "globex", id: "globex-admin" });
    revokedToken = (await operator.createAccountAdminToken({ accountId: "acme", id: "acme-old" })).secret;
    await operator.revokeAccountAdminToken({ id: "acme-old" });
    // Decisions for both licences, so ListDecisions has rows to leak if it would.
    await harness.licensing.check({ credential: { case: "apiKey", value: apiKey }, feature: "reports.export" });
    await harness.licensing.check({ credential: { case: "apiKey", value: keys.get("globex-key")?.secret ?? "" }, feature: "reports.export" });
    await harness.decisionLog.stop();
  }, 60_000);

  afterAll(async () => {
    await harness?.close();
    await store?.drop();
  });

  it("account tokens are lk_adm_ secrets shown once and listed by prefix only", async () => {
    expect(acmeToken).toMatch(/^lk_adm_[0-9A-Za-z]{43}$/);
    const { tokens } = await harness.admin(OPERATOR_TOKEN).listAccountAdminTokens({ accountId: "acme" });
    expect(tokens.map((t) => [t.id, t.prefix.length, t.revokedAt === undefined])).toEqual([
      ["acme-admin", 12, true],
      ["acme-old", 12, false],
    ]);
    expect(JSON.stringify(tokens, (_k, v: unknown) => (typeof v === "bigint" ? v.toString() : v))).not.toContain(acmeToken);
  });

  it.each(AGAINST_B)("account A's token cannot %s of account B", async (_name, call, expected) => {
    expect(await codeOf(call(harness.admin(acmeToken)))).toBe(expected);
  });

  it.each(OPERATOR_ONLY)("account tokens may not call the operator-only %s (PERMISSION_DENIED)", async (_name, call) => {
    expect(await codeOf(call(harness.admin(acmeToken)))).toBe(Code.PermissionDenied);
  });

  it("account B's licence, key and version are unchanged after A's attempts", async () => {
    const { license } = await harness.admin(OPERATOR_TOKEN).getLicense({ licenseId: "globex-prod" });
    expect(license?.status).toBe("active");
    expect(license?.validUntil).toBeUndefined();
    expect(license?.version).toBe(1n);
    const { keys } = await harness.admin(OPERATOR_TOKEN).listApiKeys({ licenseId: "globex-prod" });
    expect(keys.map((k) => [k.id, k.revokedAt])).toEqual([["globex-key", undefined]]);
  });

  it("lists show account A's token only its own objects", async () => {
    const client = harness.admin(acmeToken);
    expect((await client.listAccounts({})).accounts.map((a) => a.id)).toEqual(["acme"]);
    expect((await client.listLicenses({})).licenses.map((l) => l.id)).toEqual(["acme-prod"]);
    expect((await client.listPlans({})).plans.map((p) => p.name)).toEqual(["acme-plan"]);
    expect((await client.listApiKeys({})).keys.map((k) => k.licenseId)).toEqual(["acme-prod"]);
    const { decisions } = await client.listDecisions({});
    expect(decisions.length).toBeGreaterThan(0);
    expect(new Set(decisions.map((d) => d.licenseId))).toEqual(new Set(["acme-prod"]));
  });

  it("the operator sees every account's objects", async () => {
    const client = harness.admin(OPERATOR_TOKEN);
    expect((await client.listAccounts({})).accounts.map((a) => a.id)).toEqual(["acme", "globex"]);
    expect((await client.listLicenses({})).licenses.map((l) => l.id)).toEqual(["acme-prod", "globex-prod"]);
    expect(new Set((await client.listDecisions({})).decisions.map((d) => d.licenseId))).toEqual(new Set(["acme-prod", "globex-prod"]));
    expect(await codeOf(client.listIssuers({}))).toBe("OK");
    expect(await codeOf(client.export({}))).toBe("OK");
  });

  it.each(OWN)("account A's token may %s on its own account", async (_name, call) => {
    expect(await codeOf(call(harness.admin(acmeToken)))).toBe("OK");
  });

  it.each(OWN)("the operator may %s", async (_name, call) => {
    expect(await codeOf(call(harness.admin(OPERATOR_TOKEN)))).toBe("OK");
  });

  const everyRpc = AdminService.methods.map((m) => m.localName);
  const SYNC_OPERATOR_ONLY = new Set(["apply", "export", "issueLicenseToken", "rotateSigningKey", "listSigningKeys", "retireSigningKey"]);

  it.each([
    ["no authorization header", undefined],
    ["garbage", "not-a-token"],
    ["a well-formed account token nobody issued", `lk_adm_${"x".repeat(43)}`],
  ])("%s is UNAUTHENTICATED on every AdminService RPC", async (_name, token) => {
    const client = harness.admin(token) as unknown as Record<string, (req: object) => Promise<unknown>>;
    for (const rpc of everyRpc) {
      const call = client[rpc];
      expect(call, rpc).toBeTypeOf("function");
      const code = await codeOf((call as (req: object) => Promise<unknown>)({}));
      // Handlers not in this harness (other issues' RPCs) answer UNIMPLEMENTED before authorizing.
      if (code === Code.Unimplemented) continue;
      // The synchronous operator-only gate of the older handlers refuses anything shaped like an
      // account token with PERMISSION_DENIED, without a lookup (see AdminAuthorizer.operatorOnly).
      const expected = token?.startsWith("lk_adm_") === true && SYNC_OPERATOR_ONLY.has(rpc) ? Code.PermissionDenied : Code.Unauthenticated;
      expect([rpc, code]).toEqual([rpc, expected]);
    }
  });

  it("a revoked account token is UNAUTHENTICATED", async () => {
    expect(await codeOf(harness.admin(revokedToken).listAccounts({}))).toBe(Code.Unauthenticated);
  });

  it("revoking a token takes effect at once on this replica, even when cached", async () => {
    const operator = harness.admin(OPERATOR_TOKEN);
    const { secret } = await operator.createAccountAdminToken({ accountId: "acme", id: "acme-short" });
    expect(await codeOf(harness.admin(secret).listAccounts({}))).toBe("OK");
    await operator.revokeAccountAdminToken({ id: "acme-short" });
    expect(await codeOf(harness.admin(secret).listAccounts({}))).toBe(Code.Unauthenticated);
  });

  it("data-plane credentials (an API key, a service token) are UNAUTHENTICATED as admin bearers", async () => {
    for (const token of [apiKey, serviceToken]) {
      expect(token).not.toBe("");
      expect(await codeOf(harness.admin(token).listAccounts({}))).toBe(Code.Unauthenticated);
      expect(await codeOf(harness.admin(token).export({}))).toBe(Code.Unauthenticated);
    }
  });

  it("the admin token is no data-plane credential: Check with it as an API key is UNKNOWN_CREDENTIAL", async () => {
    const answer = await harness.licensing.check({ credential: { case: "apiKey", value: acmeToken }, feature: "reports.export" });
    expect(answer.decision).toBe(Decision.DENY);
  });
});
