/**
 * Service tokens on the hot path, against a real database (PGlite always; PostgreSQL when
 * DATABASE_URL is set): `authorization: Bearer lk_svc_...` → may this caller name licences?
 */
import type { Kysely } from "kysely";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { Reason } from "../../src/gen/licensing/v1/licensing_pb.js";
import { generateServiceToken, looksLikeServiceToken } from "../../src/licensing/credentials/service-token-secrets.js";
import { createServiceTokenAuthorizer, type ServiceAuthorization, type ServiceTokenAuthorizer } from "../../src/licensing/credentials/service-tokens.js";
import { applyRules } from "../../src/rules/apply.js";
import { parseRules } from "../../src/rules/parse.js";
import type { Database } from "../../src/store/schema.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";

const T0 = new Date("2026-03-01T12:00:00.000Z");

const RULES = `version: 1
service_tokens:
  - id: billing
    rights: [license_id]
  - id: reporting
    rights: [license_id]
    expires_at: 2026-03-01T13:00:00Z
  - id: retired
    rights: [license_id]
    revoked: true
`;

test("generated service tokens are lk_svc_ + 43 base62 characters, distinct, with a 12-character prefix", () => {
  const a = generateServiceToken();
  const b = generateServiceToken();
  expect(a.secret).toMatch(/^lk_svc_[0-9A-Za-z]{43}$/);
  expect(looksLikeServiceToken(a.secret)).toBe(true);
  expect(looksLikeServiceToken(`lk_live_${a.secret.slice(7)}`)).toBe(false);
  expect(a.prefix).toBe(a.secret.slice(0, 12));
  expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
  expect(a.secret).not.toBe(b.secret);
});

describe.each(testBackends())("service tokens on %s", (backend) => {
  let store: TestStore;
  let db: Kysely<Database>;
  let secrets: Map<string, string>;
  let authorizer: ServiceTokenAuthorizer;
  let clock: number;

  beforeEach(async () => {
    store = await createTestStore(backend);
    db = store.db;
    clock = T0.getTime();
    const { issuedKeys } = await applyRules(db, parseRules(RULES), { prune: false, dryRun: false, now: T0 });
    secrets = new Map(issuedKeys.map((k) => [k.id, k.secret]));
    authorizer = createServiceTokenAuthorizer({ db, now: () => clock });
  });
  afterEach(() => store.drop());

  const bearer = (id: string): string => `Bearer ${secrets.get(id) ?? ""}`;

  async function authorize(header: string | undefined, nowMs = clock): Promise<ServiceAuthorization> {
    return authorizer.authorizeLicenseIdCaller(header, nowMs);
  }

  test("a valid token with the license_id right may name licences; the second check is synchronous", async () => {
    const first = authorizer.authorizeLicenseIdCaller(bearer("billing"), clock);
    expect(first).toBeInstanceOf(Promise);
    expect(await first).toEqual({ ok: true, tokenId: "billing", rights: ["license_id"] });
    const second = authorizer.authorizeLicenseIdCaller(bearer("billing"), clock);
    expect(second).not.toBeInstanceOf(Promise);
    expect(second).toEqual({ ok: true, tokenId: "billing", rights: ["license_id"] });
    expect(authorizer.authorizeLicenseIdCaller(`bearer   ${secrets.get("billing") ?? ""}  `, clock)).toMatchObject({ ok: true });
  });

  test("a revoked token is not valid", async () => {
    expect(await authorize(bearer("retired"))).toMatchObject({ ok: false, code: "ERR_NOT_AUTHORIZED", message: "the service token is revoked" });
  });

  test("an expired token is not valid from its expiry on", async () => {
    expect(await authorize(bearer("reporting"), Date.parse("2026-03-01T12:59:59.999Z"))).toMatchObject({ ok: true });
    expect(await authorize(bearer("reporting"), Date.parse("2026-03-01T13:00:00.000Z"))).toMatchObject({
      ok: false,
      message: "the service token has expired",
    });
  });

  test("revoking through Apply takes effect once the cache entry is invalidated", async () => {
    expect(await authorize(bearer("billing"))).toMatchObject({ ok: true });
    await applyRules(db, parseRules(RULES.replace("  - id: billing\n    rights: [license_id]\n", "  - id: billing\n    rights: [license_id]\n    revoked: true\n")), {
      prune: false,
      dryRun: false,
      now: T0,
    });
    authorizer.invalidateAll();
    expect(await authorize(bearer("billing"))).toMatchObject({ ok: false, message: "the service token is revoked" });
  });

  test("a missing header, another scheme, an API key or an unknown token is refused (UNKNOWN_CREDENTIAL)", async () => {
    const refused = [
      undefined,
      "",
      `Basic ${secrets.get("billing") ?? ""}`,
      "Bearer lk_live_0123456789012345678901234567890123456789abc",
      `Bearer ${generateServiceToken().secret}`,
    ];
    for (const header of refused) {
      const result = await authorize(header);
      expect(result.ok).toBe(false);
      if (!result.ok) expect(result.reason).toBe(Reason.UNKNOWN_CREDENTIAL);
    }
  });

  test("an unknown token is remembered briefly: the repeat is answered synchronously", async () => {
    const header = `Bearer ${generateServiceToken().secret}`;
    expect(await authorize(header)).toMatchObject({ ok: false });
    const again = authorizer.authorizeLicenseIdCaller(header, clock);
    expect(again).not.toBeInstanceOf(Promise);
    expect(again).toMatchObject({ ok: false, message: "the service token is not valid" });
  });

  test("a token without the license_id right may not name licences", async () => {
    const token = generateServiceToken();
    await db
      .insertInto("service_tokens")
      .values({ id: "nothing", prefix: token.prefix, secret_hash: token.hash, rights: [], created_at: T0, updated_at: T0 })
      .execute();
    expect(await authorizer.resolve(`Bearer ${token.secret}`, clock)).toEqual({ ok: true, tokenId: "nothing", rights: [] });
    expect(await authorize(`Bearer ${token.secret}`)).toMatchObject({ ok: false, message: 'the service token lacks the "license_id" right' });
  });
});
