/**
 * JWT verification against a real JWKS endpoint (node:http on 127.0.0.1, started here): the
 * claims checks, the algorithm allow-list, the mapping to Check reasons, key rotation at the
 * identity provider, the fetch budget under a flood of unknown kids, and the hot-path cache.
 */
import { exportSPKI, SignJWT } from "jose";
import { afterAll, afterEach, beforeAll, describe, expect, test, vi } from "vitest";
import { Reason } from "../../src/gen/licensing/v1/licensing_pb.js";
import { createJwtVerifier, MISS, type IssuerConfig, type JwtVerification, type JwtVerifier } from "../../src/licensing/credentials/jwt.js";
import { base64urlJson, makeKey, sign, startJwksServer, type JwksServer, type TestKey } from "./jwks-server.js";

const ISS = "https://idp.test/";
const AUD = "licensing";

let keyA: TestKey;
let keyB: TestKey;
let stranger: TestKey;
let server: JwksServer;

beforeAll(async () => {
  [keyA, keyB, stranger] = await Promise.all([makeKey("key-a"), makeKey("key-b"), makeKey("stranger")]);
  server = await startJwksServer([keyA]);
});
afterAll(() => server.close());

function issuerConfig(overrides: Partial<IssuerConfig> = {}): IssuerConfig {
  return {
    id: "idp",
    issuer: ISS,
    jwksUrl: server.url,
    audiences: [AUD],
    algorithms: ["RS256"],
    leewaySeconds: 60,
    licenseClaim: "license_id",
    accountClaim: null,
    rolesClaim: "roles",
    ...overrides,
  };
}

function verifier(overrides: Partial<IssuerConfig> = {}, cooldownMs = 10_000): JwtVerifier {
  return createJwtVerifier({ issuers: [issuerConfig(overrides)], jwksCooldownMs: cooldownMs });
}

const nowS = (): number => Math.floor(Date.now() / 1000);

/** A valid token for licence acme-prod with roles [admin, analyst], signed by keyA unless told. */
function token(overrides: Partial<Parameters<typeof sign>[0]> = {}): Promise<string> {
  const iat = nowS();
  return sign({ key: keyA, iss: ISS, aud: AUD, iat, exp: iat + 600, claims: { license_id: "acme-prod", roles: ["admin", "analyst"] }, ...overrides });
}

function expectDenied(result: JwtVerification, reason: Reason, code: string): void {
  expect(result.ok).toBe(false);
  if (result.ok) return;
  expect(result.reason).toBe(reason);
  expect(result.code).toBe(code);
}

describe("JWT verification", () => {
  afterEach(() => {
    server.serve([keyA]);
    server.failWith(undefined);
  });

  test("a valid RS256 token resolves to its licence and roles", async () => {
    // One clock reading for both the token and the expectation (two may straddle a second).
    const iat = nowS();
    const jwt = await token({ iat, exp: iat + 600 });
    const result = await verifier().verify(jwt, Date.now());
    expect(result).toEqual({
      ok: true,
      issuerId: "idp",
      licenseId: "acme-prod",
      roles: ["admin", "analyst"],
      expiresAtMs: (iat + 600) * 1000,
    });
  });

  test("an account claim resolves to the account; a space-separated scope claim gives the roles", async () => {
    const jwt = await token({ claims: { org: "acme", scope: "read write  admin" } });
    const result = await verifier({ licenseClaim: null, accountClaim: "org", rolesClaim: "scope" }).verify(jwt, Date.now());
    expect(result).toMatchObject({ ok: true, accountId: "acme", roles: ["read", "write", "admin"] });
    expect(result.ok && result.licenseId).toBeUndefined();
  });

  test("namespaced and nested claims are found; a missing roles claim means no roles", async () => {
    const jwt = await token({ claims: { "https://acme.example/license": "acme-prod", realm_access: { roles: ["ops"] } } });
    const nested = await verifier({ licenseClaim: "https://acme.example/license", rolesClaim: "realm_access.roles" }).verify(jwt, Date.now());
    expect(nested).toMatchObject({ ok: true, licenseId: "acme-prod", roles: ["ops"] });
    const none = await verifier({ licenseClaim: "https://acme.example/license" }).verify(jwt, Date.now());
    expect(none).toMatchObject({ ok: true, roles: [] });
  });

  test("a token without the licence claim is INVALID_TOKEN", async () => {
    const jwt = await token({ claims: { roles: [] } });
    expectDenied(await verifier().verify(jwt, Date.now()), Reason.INVALID_TOKEN, "ERR_CLAIM_INVALID");
  });

  test('alg "none" is INVALID_TOKEN', async () => {
    const iat = nowS();
    const unsigned = `${base64urlJson({ alg: "none", typ: "JWT" })}.${base64urlJson({ iss: ISS, aud: AUD, iat, exp: iat + 600, license_id: "acme-prod" })}.`;
    expectDenied(await verifier().verify(unsigned, Date.now()), Reason.INVALID_TOKEN, "ERR_ALGORITHM_NOT_ALLOWED");
  });

  test("HS256 signed with the RSA public key as the secret is INVALID_TOKEN", async () => {
    const secret = new TextEncoder().encode(await exportSPKI(keyA.publicKey));
    const iat = nowS();
    const forged = await new SignJWT({ license_id: "acme-prod" })
      .setProtectedHeader({ alg: "HS256", kid: keyA.kid })
      .setIssuer(ISS)
      .setAudience(AUD)
      .setIssuedAt(iat)
      .setExpirationTime(iat + 600)
      .sign(secret);
    const before = server.requests;
    expectDenied(await verifier().verify(forged, Date.now()), Reason.INVALID_TOKEN, "ERR_ALGORITHM_NOT_ALLOWED");
    // Refused before any key lookup: a forged alg costs no fetch.
    expect(server.requests).toBe(before);
  });

  test("a token in an algorithm the issuer does not allow is INVALID_TOKEN, even when its key is published", async () => {
    const es = await makeKey("key-es", "ES256");
    server.serve([keyA, es]);
    const jwt = await token({ key: es });
    // RS256 only: an ES256 token is refused even though its key is published.
    expectDenied(await verifier().verify(jwt, Date.now()), Reason.INVALID_TOKEN, "ERR_ALGORITHM_NOT_ALLOWED");
    expect(await verifier({ algorithms: ["ES256", "RS256"] }).verify(jwt, Date.now())).toMatchObject({ ok: true });
  });

  test("an expired token is TOKEN_EXPIRED (beyond the leeway), and accepted within it", async () => {
    const iat = nowS() - 3600;
    const expired = await token({ iat, exp: nowS() - 61 });
    expectDenied(await verifier().verify(expired, Date.now()), Reason.TOKEN_EXPIRED, "ERR_TOKEN_EXPIRED");
    const justExpired = await token({ iat, exp: nowS() - 30 });
    expect(await verifier().verify(justExpired, Date.now())).toMatchObject({ ok: true });
    expectDenied(await verifier({ leewaySeconds: 0 }).verify(justExpired, Date.now()), Reason.TOKEN_EXPIRED, "ERR_TOKEN_EXPIRED");
  });

  test("a token whose nbf is in the future is TOKEN_EXPIRED", async () => {
    const jwt = await token({ nbf: nowS() + 3600 });
    expectDenied(await verifier().verify(jwt, Date.now()), Reason.TOKEN_EXPIRED, "ERR_TOKEN_NOT_YET_VALID");
  });

  test("a token without exp is INVALID_TOKEN", async () => {
    const jwt = await sign({ key: keyA, iss: ISS, aud: AUD, iat: nowS(), claims: { license_id: "acme-prod" } });
    expectDenied(await verifier().verify(jwt, Date.now()), Reason.INVALID_TOKEN, "ERR_CLAIM_INVALID");
  });

  test("a token from an unknown issuer is INVALID_TOKEN, without a fetch", async () => {
    const before = server.requests;
    expectDenied(await verifier().verify(await token({ iss: "https://evil.test/" }), Date.now()), Reason.INVALID_TOKEN, "ERR_UNKNOWN_ISSUER");
    expectDenied(await verifier().verify(await token({ iss: undefined }), Date.now()), Reason.INVALID_TOKEN, "ERR_UNKNOWN_ISSUER");
    expect(server.requests).toBe(before);
  });

  test("a token for another audience is INVALID_TOKEN; any listed audience is accepted", async () => {
    const jwt = await token({ aud: "billing" });
    expectDenied(await verifier().verify(jwt, Date.now()), Reason.INVALID_TOKEN, "ERR_CLAIM_INVALID");
    expect(await verifier({ audiences: [AUD, "billing"] }).verify(jwt, Date.now())).toMatchObject({ ok: true });
    expect(await verifier().verify(await token({ aud: ["other", AUD] }), Date.now())).toMatchObject({ ok: true });
  });

  test("a token signed by a key the JWKS does not have (unknown kid) is INVALID_TOKEN", async () => {
    const jwt = await token({ key: stranger });
    expectDenied(await verifier().verify(jwt, Date.now()), Reason.INVALID_TOKEN, "ERR_UNKNOWN_KEY");
  });

  test("a token signed by another key under a published kid is INVALID_TOKEN", async () => {
    const jwt = await token({ key: stranger, kid: keyA.kid });
    expectDenied(await verifier().verify(jwt, Date.now()), Reason.INVALID_TOKEN, "ERR_SIGNATURE_INVALID");
  });

  test("a tampered payload is INVALID_TOKEN", async () => {
    const [header, , signature] = (await token()).split(".");
    const iat = nowS();
    const payload = base64urlJson({ iss: ISS, aud: AUD, iat, exp: iat + 600, license_id: "someone-else", roles: ["admin"] });
    expectDenied(await verifier().verify(`${header}.${payload}.${signature}`, Date.now()), Reason.INVALID_TOKEN, "ERR_SIGNATURE_INVALID");
  });

  test("garbage is INVALID_TOKEN (malformed)", async () => {
    for (const garbage of ["", "abc", "a.b.c", "lk_live_xyz", `${"x".repeat(20_000)}`]) {
      expectDenied(await verifier().verify(garbage, Date.now()), Reason.INVALID_TOKEN, "ERR_TOKEN_MALFORMED");
    }
  });

  test("an unreachable key set is BACKEND_UNAVAILABLE, not INVALID_TOKEN, and is not cached", async () => {
    server.failWith(503);
    const jwt = await token();
    const v = verifier();
    expectDenied(await v.verify(jwt, Date.now()), Reason.BACKEND_UNAVAILABLE, "ERR_JWKS_UNAVAILABLE");
    expect(v.peek(jwt, Date.now())).toBe(MISS);
    server.failWith(undefined);
    expect(await v.verify(jwt, Date.now())).toMatchObject({ ok: true });
  });

  test("a flood of 100 tokens with random unknown kids causes at most 1-2 JWKS fetches", async () => {
    const v = verifier();
    const before = server.requests;
    const tokens = await Promise.all(
      Array.from({ length: 100 }, (_, i) => token({ key: stranger, kid: `random-${i}-${Math.random().toString(36).slice(2)}` })),
    );
    const results = await Promise.all(tokens.map((t) => v.verify(t, Date.now())));
    for (const result of results) expectDenied(result, Reason.INVALID_TOKEN, "ERR_UNKNOWN_KEY");
    // And a second wave, one after another, inside the cooldown.
    for (const t of tokens.slice(0, 20)) expectDenied(await v.verify(t, Date.now()), Reason.INVALID_TOKEN, "ERR_UNKNOWN_KEY");
    const fetches = server.requests - before;
    expect(fetches).toBeGreaterThanOrEqual(1);
    expect(fetches).toBeLessThanOrEqual(2);
  });

  test("IdP key rotation: tokens signed with the new key verify (refetch on unknown kid) and old ones still verify while served", async () => {
    vi.useFakeTimers({ toFake: ["Date"], now: Date.now() });
    try {
      const v = verifier();
      const before = server.requests;
      expect(await v.verify(await token(), Date.now())).toMatchObject({ ok: true });
      expect(server.requests - before).toBe(1);

      // The IdP publishes key B and starts signing with it.
      server.serve([keyA, keyB]);
      vi.setSystemTime(Date.now() + 10_001); // past the refetch cooldown
      expect(await v.verify(await token({ key: keyB }), Date.now())).toMatchObject({ ok: true, licenseId: "acme-prod" });
      expect(server.requests - before).toBe(2);
      // A fresh token of the old key still verifies while it is served, with no further fetch.
      expect(await v.verify(await token({ claims: { license_id: "acme-prod", roles: ["x"] } }), Date.now())).toMatchObject({ ok: true, roles: ["x"] });
      expect(server.requests - before).toBe(2);

      // The IdP drops key A; once the set is refreshed, A's new tokens are refused.
      server.serve([keyB]);
      vi.setSystemTime(Date.now() + 600_001); // past the key set's max age
      expect(await v.verify(await token({ key: keyB, claims: { license_id: "acme-prod", n: 2 } }), Date.now())).toMatchObject({ ok: true });
      expectDenied(await v.verify(await token({ claims: { license_id: "acme-prod", n: 3 } }), Date.now()), Reason.INVALID_TOKEN, "ERR_UNKNOWN_KEY");
    } finally {
      vi.useRealTimers();
    }
  });
});

describe("JWT verification: the hot path", () => {
  test("a repeated token is answered synchronously by peek, with no fetch", async () => {
    const v = verifier();
    const jwt = await token();
    expect(v.peek(jwt, Date.now())).toBe(MISS);
    const first = await v.verify(jwt, Date.now());
    const fetches = server.requests;
    const again = v.peek(jwt, Date.now());
    expect(again).toEqual(first);
    expect(await v.verify(jwt, Date.now())).toEqual(first);
    expect(server.requests).toBe(fetches);
  });

  test("a cached token is dropped at its expiry (plus leeway) and then denied TOKEN_EXPIRED", async () => {
    const v = verifier({ leewaySeconds: 0 });
    const iat = nowS();
    const jwt = await token({ iat, exp: iat + 5 });
    expect(await v.verify(jwt, Date.now())).toMatchObject({ ok: true });
    expect(v.peek(jwt, (iat + 4) * 1000)).toMatchObject({ ok: true });
    expect(v.peek(jwt, (iat + 5) * 1000)).toBe(MISS);
    expectDenied(await v.verify(jwt, (iat + 5) * 1000), Reason.TOKEN_EXPIRED, "ERR_TOKEN_EXPIRED");
  });

  test("failures are not cached, except malformed tokens for a short while", async () => {
    const v = createJwtVerifier({ issuers: [issuerConfig()], malformedCacheMs: 1000 });
    const wrongAud = await token({ aud: "billing" });
    await v.verify(wrongAud, Date.now());
    expect(v.peek(wrongAud, Date.now())).toBe(MISS);
    const t0 = Date.now();
    await v.verify("not-a-jwt", t0);
    expect(v.peek("not-a-jwt", t0 + 999)).toMatchObject({ ok: false, code: "ERR_TOKEN_MALFORMED" });
    expect(v.peek("not-a-jwt", t0 + 1000)).toBe(MISS);
  });

  test("setIssuers forgets cached verifications (a removed issuer's tokens stop verifying)", async () => {
    const v = verifier();
    const jwt = await token();
    await v.verify(jwt, Date.now());
    v.setIssuers([]);
    expect(v.peek(jwt, Date.now())).toBe(MISS);
    expectDenied(await v.verify(jwt, Date.now()), Reason.INVALID_TOKEN, "ERR_UNKNOWN_ISSUER");
  });

  test("the cache is bounded: the least recently used token goes first", async () => {
    const v = createJwtVerifier({ issuers: [issuerConfig()], maxCachedTokens: 2 });
    const [t1, t2, t3] = await Promise.all([1, 2, 3].map((n) => token({ claims: { license_id: "acme-prod", n } })));
    for (const t of [t1, t2]) await v.verify(t ?? "", Date.now());
    v.peek(t1 ?? "", Date.now()); // t1 is now the most recently used
    await v.verify(t3 ?? "", Date.now());
    expect(v.peek(t1 ?? "", Date.now())).toMatchObject({ ok: true });
    expect(v.peek(t2 ?? "", Date.now())).toBe(MISS);
    expect(v.peek(t3 ?? "", Date.now())).toMatchObject({ ok: true });
  });

  test("options are validated up front, naming the option", () => {
    expect(() => createJwtVerifier({ jwksCooldownMs: -1 })).toThrow(/"jwksCooldownMs" must be an integer >= 0/);
    expect(() => createJwtVerifier({ maxCachedTokens: 0 })).toThrow(/"maxCachedTokens" must be a positive integer/);
    expect(() => createJwtVerifier({ jwksTimeoutMs: 1.5 })).toThrow(/"jwksTimeoutMs"/);
  });
});

describe("JWT verification: sharing", () => {
  test("identical concurrent verifications of a new token share one verification", async () => {
    const v = verifier();
    const jwt = await token({ claims: { license_id: "acme-prod", burst: true } });
    const results = await Promise.all(Array.from({ length: 10 }, () => v.verify(jwt, Date.now())));
    for (const result of results) expect(result).toBe(results[0]);
    expect(results[0]).toMatchObject({ ok: true });
  });
});
