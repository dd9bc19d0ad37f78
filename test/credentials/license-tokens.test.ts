/**
 * Licence tokens and their signing keys, against a real database (PGlite always; PostgreSQL when
 * DATABASE_URL is set): sign, verify offline and synchronously, expiry, rotation with overlap,
 * retirement, tampering, foreign keys, and private keys never stored in clear.
 */
import { createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";
import { createLocalJWKSet, jwtVerify, SignJWT } from "jose";
import type { Kysely } from "kysely";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import { Reason } from "../../src/gen/licensing/v1/licensing_pb.js";
import {
  createLicenseTokenVerifier,
  issueLicenseToken,
  loadLicenseTokenClaims,
  type LicenseTokenVerification,
  type LicenseTokenVerifier,
} from "../../src/licensing/credentials/license-tokens.js";
import {
  decryptPrivateKey,
  DEFAULT_RETIRE_AFTER_MS,
  encryptPrivateKey,
  ensureActiveSigningKey,
  listSigningKeys,
  retireSigningKey,
  rotateSigningKey,
} from "../../src/licensing/credentials/signing-keys.js";
import { applyRules } from "../../src/rules/apply.js";
import { parseRules } from "../../src/rules/parse.js";
import type { Database } from "../../src/store/schema.js";
import { createTestStore, testBackends, type TestStore } from "../support/database.js";
import { base64urlJson } from "./jwks-server.js";

const T0 = new Date("2026-03-01T12:00:00.000Z");
const HOUR = 3600_000;
const DAY = 24 * HOUR;

const RULES = `version: 1
accounts:
  - id: acme
    name: Acme
plans:
  - name: pro
    entitlements:
      - feature: reports.export
        kind: boolean
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
`;

function expectDenied(result: LicenseTokenVerification, reason: Reason, code: string): void {
  expect(result.ok).toBe(false);
  if (result.ok) return;
  expect(result.reason).toBe(reason);
  expect(result.code).toBe(code);
}

describe.each(testBackends())("licence tokens on %s", (backend) => {
  let store: TestStore;
  let db: Kysely<Database>;
  let kek: Buffer;
  let clock: number;
  let verifier: LicenseTokenVerifier;

  beforeEach(async () => {
    store = await createTestStore(backend);
    db = store.db;
    kek = randomBytes(32);
    clock = T0.getTime();
    verifier = createLicenseTokenVerifier({ db, now: () => clock });
    await applyRules(db, parseRules(RULES), { prune: false, dryRun: false, now: T0 });
  });
  afterEach(() => store.drop());

  async function issue(ttlSeconds?: number, at = clock) {
    const issued = await issueLicenseToken(db, kek, { licenseId: "acme-prod", ttlSeconds, now: new Date(at) });
    if (issued === undefined) throw new Error("the fixture licence must exist");
    return issued;
  }

  test("a signed token verifies to its licence, account, plan and effective entitlements", async () => {
    const { token, kid, expiresAt } = await issue();
    expect(expiresAt.toISOString()).toBe(new Date(T0.getTime() + HOUR).toISOString());
    await verifier.reload();
    expect(verifier.verify(token, clock)).toEqual({
      ok: true,
      licenseId: "acme-prod",
      accountId: "acme",
      plan: "pro",
      kid,
      expiresAtMs: T0.getTime() + HOUR,
      entitlements: [
        // The licence's quota override replaces the plan's quota; the plan's rate stays.
        { feature: "api.calls", kind: "quota", limit: 5000, period: "month" },
        { feature: "api.calls", kind: "rate", limit: 10, period: "second" },
        { feature: "reports.export", kind: "boolean" },
      ],
    });
  });

  test("the payload has the documented claims and the header the kid", async () => {
    const { token, kid } = await issue(120);
    const [header, payload] = token.split(".").slice(0, 2).map((part) => JSON.parse(Buffer.from(part, "base64url").toString("utf8")) as unknown);
    expect(header).toEqual({ alg: "EdDSA", typ: "JWT", kid });
    expect(payload).toMatchObject({ iss: "licensing", aud: "licensing", sub: "acme-prod", account: "acme", plan: "pro", iat: T0.getTime() / 1000, exp: T0.getTime() / 1000 + 120 });
  });

  test("verification is synchronous and anyone can verify offline with the JWKS document (jose)", async () => {
    const { token } = await issue();
    await verifier.reload();
    const result = verifier.verify(token, clock);
    expect(result).not.toBeInstanceOf(Promise);
    const jwks = verifier.jwksDocument();
    expect(jwks.keys).toHaveLength(1);
    expect(jwks.keys[0]).toMatchObject({ kty: "OKP", crv: "Ed25519", alg: "EdDSA", use: "sig" });
    expect(JSON.stringify(jwks)).not.toContain('"d"');
    const { payload } = await jwtVerify(token, createLocalJWKSet({ keys: jwks.keys.map((k) => ({ ...k })) }), {
      issuer: "licensing",
      audience: "licensing",
      currentDate: new Date(clock),
    });
    expect(payload.sub).toBe("acme-prod");
  });

  test("a token expires: TOKEN_EXPIRED past exp plus the 60 s tolerance, also when it was cached", async () => {
    const { token } = await issue(60);
    await verifier.reload();
    expect(verifier.verify(token, clock + 60_000 + 59_999)).toMatchObject({ ok: true });
    expectDenied(verifier.verify(token, clock + 120_000), Reason.TOKEN_EXPIRED, "ERR_TOKEN_EXPIRED");
  });

  test("ttl defaults to one hour and may not exceed 30 days", async () => {
    expect((await issue(0)).expiresAt.getTime()).toBe(T0.getTime() + HOUR);
    expect((await issue(30 * 86_400)).expiresAt.getTime()).toBe(T0.getTime() + 30 * DAY);
    await expect(issue(30 * 86_400 + 1)).rejects.toThrow(/"ttlSeconds" must be/);
    await expect(issue(-1)).rejects.toThrow(/"ttlSeconds" must be/);
  });

  test("a licence that does not exist gets no token (and no key is created for it)", async () => {
    expect(await issueLicenseToken(db, kek, { licenseId: "nobody", now: T0 })).toBeUndefined();
    expect(await listSigningKeys(db)).toEqual([]);
    expect(await loadLicenseTokenClaims(db, "nobody")).toBeUndefined();
  });

  test("rotation: tokens of the old key keep verifying; new tokens use the new key", async () => {
    const old = await issue(30 * 86_400);
    const { kid: newKid } = await rotateSigningKey(db, kek, { now: new Date(clock + HOUR) });
    expect(newKid).not.toBe(old.kid);
    clock += HOUR;
    await verifier.reload();
    expect(verifier.verify(old.token, clock)).toMatchObject({ ok: true, kid: old.kid });
    const fresh = await issue();
    expect(fresh.kid).toBe(newKid);
    expect(verifier.verify(fresh.token, clock)).toMatchObject({ ok: true, kid: newKid });
    expect(verifier.jwksDocument().keys.map((k) => k.kid).sort()).toEqual([old.kid, newKid].sort());
  });

  test("rotation schedules the superseded key's retirement after the longest token lifetime; then its tokens fail", async () => {
    const old = await issue(30 * 86_400);
    const rotatedAt = clock + HOUR;
    await rotateSigningKey(db, kek, { now: new Date(rotatedAt) });
    const superseded = (await listSigningKeys(db)).find((k) => k.kid === old.kid);
    const retireAt = rotatedAt + DEFAULT_RETIRE_AFTER_MS;
    expect(superseded?.retiredAt?.getTime()).toBe(retireAt);
    // Every token the old key signed has expired by the time it retires.
    expect(retireAt).toBeGreaterThan(old.expiresAt.getTime() + 60_000);
    await verifier.reload();
    expect(verifier.verify(old.token, old.expiresAt.getTime() - 1)).toMatchObject({ ok: true });
    // The in-memory set honours the schedule without a reload: a (hypothetical) longer-lived
    // token of the old key stops verifying at the retirement time.
    const row = await db.selectFrom("signing_keys").selectAll().where("kid", "=", old.kid).executeTakeFirstOrThrow();
    const oldKey = createPrivateKey({ key: decryptPrivateKey(row.private_key_encrypted, kek, old.kid), format: "der", type: "pkcs8" });
    const longLived = await signWith(oldKey, old.kid, retireAt + DAY);
    clock = retireAt - 1;
    expect(verifier.verify(longLived, retireAt - 1)).toMatchObject({ ok: true });
    expect(verifier.jwksDocument().keys.map((k) => k.kid)).toContain(old.kid);
    clock = retireAt;
    expectDenied(verifier.verify(longLived, retireAt), Reason.INVALID_TOKEN, "ERR_UNKNOWN_KEY");
    expect(verifier.jwksDocument().keys.map((k) => k.kid)).not.toContain(old.kid);
  });

  test("retiring a key stops its tokens at once, even cached ones, and drops it from the JWKS", async () => {
    const { token, kid } = await issue();
    await verifier.reload();
    expect(verifier.verify(token, clock)).toMatchObject({ ok: true });
    expect(await retireSigningKey(db, kid, new Date(clock))).toBe(true);
    await verifier.reload();
    expectDenied(verifier.verify(token, clock), Reason.INVALID_TOKEN, "ERR_UNKNOWN_KEY");
    expect(verifier.jwksDocument().keys).toEqual([]);
    expect(await retireSigningKey(db, "no-such-kid", new Date(clock))).toBe(false);
    // With the signer retired, the next token gets a new key.
    const next = await issue();
    expect(next.kid).not.toBe(kid);
  });

  test("a tampered payload fails with INVALID_TOKEN", async () => {
    const { token } = await issue();
    await verifier.reload();
    const [header, payload, signature] = token.split(".") as [string, string, string];
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString("utf8")) as Record<string, unknown>;
    const forged = base64urlJson({ ...claims, sub: "someone-else" });
    expectDenied(verifier.verify(`${header}.${forged}.${signature}`, clock), Reason.INVALID_TOKEN, "ERR_SIGNATURE_INVALID");
    // The second-to-last character carries signature bits (the last one is partly padding).
    const replaced = signature.at(-2) === "A" ? "B" : "A";
    const flipped = `${signature.slice(0, -2)}${replaced}${signature.slice(-1)}`;
    expectDenied(verifier.verify(`${header}.${payload}.${flipped}`, clock), Reason.INVALID_TOKEN, "ERR_SIGNATURE_INVALID");
  });

  test("a token signed by an unknown key fails with INVALID_TOKEN, with or without a known kid", async () => {
    const { kid } = await issue();
    await verifier.reload();
    const { privateKey } = generateKeyPairSync("ed25519");
    const forge = (headerKid: string) => signWith(privateKey, headerKid);
    expectDenied(verifier.verify(await forge("unknown-kid"), clock), Reason.INVALID_TOKEN, "ERR_UNKNOWN_KEY");
    expectDenied(verifier.verify(await forge(kid), clock), Reason.INVALID_TOKEN, "ERR_SIGNATURE_INVALID");
  });

  test("other algorithms and malformed tokens fail with INVALID_TOKEN", async () => {
    const { token, kid } = await issue();
    await verifier.reload();
    const [, payload, signature] = token.split(".") as [string, string, string];
    for (const alg of ["none", "HS256", "RS256"]) {
      expectDenied(verifier.verify(`${base64urlJson({ alg, kid })}.${payload}.${signature}`, clock), Reason.INVALID_TOKEN, "ERR_ALGORITHM_NOT_ALLOWED");
    }
    for (const garbage of ["", "a.b", "a.b.c", `${token}.x`, "a!.b.c"]) {
      expectDenied(verifier.verify(garbage, clock), Reason.INVALID_TOKEN, "ERR_TOKEN_MALFORMED");
    }
  });

  test("before reload nothing verifies (no keys are known)", async () => {
    const { token } = await issue();
    expectDenied(verifier.verify(token, clock), Reason.INVALID_TOKEN, "ERR_UNKNOWN_KEY");
  });

  test("private keys are never stored in clear: the column is AES-GCM ciphertext bound to the kid", async () => {
    const signer = await ensureActiveSigningKey(db, kek, T0);
    const pkcs8 = signer.privateKey.export({ format: "der", type: "pkcs8" });
    const row = await db.selectFrom("signing_keys").selectAll().where("kid", "=", signer.kid).executeTakeFirstOrThrow();
    const stored = JSON.stringify(row);
    for (const encoding of ["base64", "base64url", "hex"] as const) {
      expect(stored).not.toContain(pkcs8.toString(encoding));
      // The 32-byte seed, the secret part of the PKCS#8 document, appears in no encoding either.
      expect(stored).not.toContain(pkcs8.subarray(pkcs8.length - 32).toString(encoding));
    }
    expect(decryptPrivateKey(row.private_key_encrypted, kek, row.kid)).toEqual(pkcs8);
    expect(() => decryptPrivateKey(row.private_key_encrypted, randomBytes(32), row.kid)).toThrow(/does not decrypt/);
    expect(() => decryptPrivateKey(row.private_key_encrypted, kek, "another-kid")).toThrow(/does not decrypt/);
    // Each encryption uses a fresh IV.
    expect(encryptPrivateKey(pkcs8, kek, row.kid)).not.toBe(encryptPrivateKey(pkcs8, kek, row.kid));
  });

  test("a KEK that is not 32 bytes is refused, naming it", async () => {
    await expect(issueLicenseToken(db, randomBytes(16), { licenseId: "acme-prod", now: T0 })).rejects.toThrow(/"kek" must be 32 bytes/);
  });

  test("concurrent first issues create one signing key", async () => {
    const issued = await Promise.all([issue(), issue(), issue()]);
    expect(new Set(issued.map((i) => i.kid)).size).toBe(1);
    expect(await listSigningKeys(db)).toHaveLength(1);
  });
});

async function signWith(privateKey: KeyObject, kid: string, expMs = T0.getTime() + HOUR): Promise<string> {
  const iat = Math.floor(T0.getTime() / 1000);
  return new SignJWT({ account: "acme", plan: "pro", ents: [] })
    .setProtectedHeader({ alg: "EdDSA", kid })
    .setIssuer("licensing")
    .setAudience("licensing")
    .setSubject("acme-prod")
    .setIssuedAt(iat)
    .setExpirationTime(Math.floor(expMs / 1000))
    .sign(privateKey);
}
