/**
 * Licence tokens: short-lived EdDSA (Ed25519) JWTs this service signs, naming a licence and what
 * it grants, verifiable offline by anyone with the public keys (`jwksDocument`, served at
 * /.well-known/jwks.json):
 *
 *   header  { alg: "EdDSA", typ: "JWT", kid }
 *   payload { iss: "licensing", aud: "licensing", sub: <licence id>, iat, exp,
 *             account, plan, ents: [{ feature, kind, limit?, period? }] }
 *
 * Verification here is synchronous: the public keys are imported when `reload` runs (at start,
 * and when `licensing_changes` says "signing_keys"), and Ed25519 verification with node:crypto
 * needs no promise. Verified tokens are also cached (bounded LRU keyed by SHA-256, dropped at
 * expiry); a cached token whose key has since been retired fails like any other.
 */
import { createPublicKey, verify as verifySignature, type KeyObject } from "node:crypto";
import { SignJWT } from "jose";
import type { Kysely } from "kysely";
import type { Database, EntitlementKind, EntitlementPeriod } from "../../store/schema.js";
import { credentialFailure, type CredentialFailure } from "./errors.js";
import { nonNegativeInteger, positiveInteger } from "./jwt.js";
import {
  ensureActiveSigningKey,
  loadVerificationKeys,
  MAX_LICENSE_TOKEN_TTL_SECONDS,
  SIGNING_ALGORITHM,
  type PublicSigningJwk,
} from "./signing-keys.js";
import { createVerifiedTokenCache, tokenCacheKey } from "./verified-token-cache.js";

export { MAX_LICENSE_TOKEN_TTL_SECONDS };

/** The `iss` and `aud` of every licence token. */
export const LICENSE_TOKEN_ISSUER = "licensing";
export const LICENSE_TOKEN_AUDIENCE = "licensing";
/** One hour. */
export const DEFAULT_LICENSE_TOKEN_TTL_SECONDS = 3600;

/** One entitlement as a token carries it. */
export interface TokenEntitlement {
  readonly feature: string;
  readonly kind: EntitlementKind;
  /** Absent for boolean. */
  readonly limit?: number;
  /** quota and rate only. */
  readonly period?: EntitlementPeriod;
}

export interface LicenseTokenClaims {
  readonly licenseId: string;
  readonly accountId: string;
  readonly plan: string;
  /** Effective entitlements (plan's, replaced per (feature, kind) by overrides), sorted. */
  readonly entitlements: readonly TokenEntitlement[];
}

export interface IssuedLicenseToken {
  readonly token: string;
  readonly kid: string;
  readonly expiresAt: Date;
}

export interface IssueLicenseTokenOptions {
  readonly licenseId: string;
  /** Lifetime in seconds, 1..MAX_LICENSE_TOKEN_TTL_SECONDS; 0 or absent: one hour. */
  readonly ttlSeconds?: number;
  readonly now: Date;
}

/**
 * Signs a token for the licence with the active signing key (creating one if none is active).
 * Resolves undefined when the licence does not exist.
 * @throws TypeError when ttlSeconds is out of range or the KEK is not 32 bytes.
 */
export async function issueLicenseToken(
  db: Kysely<Database>,
  kek: Uint8Array,
  options: IssueLicenseTokenOptions,
): Promise<IssuedLicenseToken | undefined> {
  const ttlSeconds = licenseTokenTtl(options.ttlSeconds);
  const claims = await loadLicenseTokenClaims(db, options.licenseId);
  if (claims === undefined) return undefined;
  const signer = await ensureActiveSigningKey(db, kek, options.now);
  const iat = Math.floor(options.now.getTime() / 1000);
  const exp = iat + ttlSeconds;
  const token = await new SignJWT({ account: claims.accountId, plan: claims.plan, ents: claims.entitlements })
    .setProtectedHeader({ alg: SIGNING_ALGORITHM, typ: "JWT", kid: signer.kid })
    .setIssuer(LICENSE_TOKEN_ISSUER)
    .setAudience(LICENSE_TOKEN_AUDIENCE)
    .setSubject(claims.licenseId)
    .setIssuedAt(iat)
    .setExpirationTime(exp)
    .sign(signer.privateKey);
  return { token, kid: signer.kid, expiresAt: new Date(exp * 1000) };
}

/**
 * The lifetime to use for a requested `ttlSeconds` (0/undefined → one hour).
 * @throws TypeError naming ttlSeconds when it is negative, fractional or above 30 days.
 */
export function licenseTokenTtl(ttlSeconds: number | undefined): number {
  if (ttlSeconds === undefined || ttlSeconds === 0) return DEFAULT_LICENSE_TOKEN_TTL_SECONDS;
  if (!Number.isSafeInteger(ttlSeconds) || ttlSeconds < 0 || ttlSeconds > MAX_LICENSE_TOKEN_TTL_SECONDS) {
    throw new TypeError(`"ttlSeconds" must be a whole number of seconds from 1 to ${MAX_LICENSE_TOKEN_TTL_SECONDS} (30 days), got ${String(ttlSeconds)}`);
  }
  return ttlSeconds;
}

/** The licence's account, plan and effective entitlements; undefined when it does not exist. */
export async function loadLicenseTokenClaims(db: Kysely<Database>, licenseId: string): Promise<LicenseTokenClaims | undefined> {
  const license = await db.selectFrom("licenses").select(["id", "account_id", "plan"]).where("id", "=", licenseId).executeTakeFirst();
  if (license === undefined) return undefined;
  const rows = await db
    .selectFrom("entitlements")
    .select(["plan", "license_id", "feature", "kind", "limit", "period"])
    .where((eb) => eb.or([eb("plan", "=", license.plan), eb("license_id", "=", license.id)]))
    .execute();
  const effective = new Map<string, TokenEntitlement>();
  // Plan rows first, then overrides, so an override replaces the plan's (feature, kind).
  for (const row of [...rows.filter((r) => r.license_id === null), ...rows.filter((r) => r.license_id !== null)]) {
    const entitlement: TokenEntitlement = {
      feature: row.feature,
      kind: row.kind,
      ...(row.limit === null ? {} : { limit: Number(row.limit) }),
      ...(row.period === null ? {} : { period: row.period }),
    };
    effective.set(`${row.feature}\u0000${row.kind}`, entitlement);
  }
  const entitlements = [...effective.values()].sort((a, b) => compare(a.feature, b.feature) || compare(a.kind, b.kind));
  return { licenseId: license.id, accountId: license.account_id, plan: license.plan, entitlements };
}

export type VerifiedLicenseToken = LicenseTokenClaims & {
  readonly ok: true;
  readonly kid: string;
  /** `exp`, epoch ms. */
  readonly expiresAtMs: number;
};

export type LicenseTokenVerification = VerifiedLicenseToken | CredentialFailure;

/** A JSON Web Key Set document, as served at /.well-known/jwks.json. */
export interface JwksDocument {
  readonly keys: readonly PublicSigningJwk[];
}

export interface LicenseTokenVerifierOptions {
  readonly db: Kysely<Database>;
  /** Epoch ms; for `reload` and `jwksDocument`. */
  readonly now: () => number;
  /** Clock skew tolerated on exp and nbf, seconds. Default 60. */
  readonly clockToleranceSeconds?: number;
  /** Most verified tokens remembered. Default 10000. */
  readonly maxCachedTokens?: number;
}

export interface LicenseTokenVerifier {
  /** Loads the keys that verify now (replacing the previous set). Call before the first verify. */
  reload(): Promise<void>;
  /** Verifies `token` at `nowMs`, synchronously. Never throws for a bad token. */
  verify(token: string, nowMs: number): LicenseTokenVerification;
  /** The public keys that verify now, for /.well-known/jwks.json. */
  jwksDocument(): JwksDocument;
}

/** Longest token looked at. */
const MAX_TOKEN_CHARS = 16 * 1024;
const BASE64URL = /^[A-Za-z0-9_-]+$/;

interface LoadedKey {
  readonly jwk: PublicSigningJwk;
  readonly publicKey: KeyObject;
  readonly retiredAtMs: number | null;
}

/** @throws TypeError naming the option when an option is out of range. */
export function createLicenseTokenVerifier(options: LicenseTokenVerifierOptions): LicenseTokenVerifier {
  const toleranceMs = nonNegativeInteger(options.clockToleranceSeconds, 60, "clockToleranceSeconds") * 1000;
  const cache = createVerifiedTokenCache<VerifiedLicenseToken>(positiveInteger(options.maxCachedTokens, 10_000, "maxCachedTokens"));
  let keys = new Map<string, LoadedKey>();

  function usableKey(kid: string, nowMs: number): LoadedKey | undefined {
    const key = keys.get(kid);
    return key === undefined || (key.retiredAtMs !== null && key.retiredAtMs <= nowMs) ? undefined : key;
  }

  function verifyUncached(token: string, nowMs: number): LicenseTokenVerification {
    const parts = splitCompact(token);
    if (parts === undefined) return credentialFailure("ERR_TOKEN_MALFORMED", "not a JWT (expected header.payload.signature)");
    const [headerPart, payloadPart, signaturePart] = parts;
    const header = decodeJsonPart(headerPart);
    if (header === undefined) return credentialFailure("ERR_TOKEN_MALFORMED", "token header is not a JSON object");
    // Nothing here understands critical extensions, so a token that has any is refused.
    if (header.crit !== undefined) return credentialFailure("ERR_TOKEN_MALFORMED", "token header has unsupported crit");
    if (header.alg !== SIGNING_ALGORITHM) return credentialFailure("ERR_ALGORITHM_NOT_ALLOWED", "licence tokens are signed with EdDSA only");
    const key = typeof header.kid === "string" ? usableKey(header.kid, nowMs) : undefined;
    if (key === undefined) return credentialFailure("ERR_UNKNOWN_KEY", "the token's signing key is unknown or retired");
    const signature = Buffer.from(signaturePart, "base64url");
    const signed = Buffer.from(`${headerPart}.${payloadPart}`, "ascii");
    if (signature.length !== 64 || !verifySignature(null, signed, key.publicKey, signature)) {
      return credentialFailure("ERR_SIGNATURE_INVALID", "token signature is not valid");
    }
    const payload = decodeJsonPart(payloadPart);
    if (payload === undefined) return credentialFailure("ERR_TOKEN_MALFORMED", "token payload is not a JSON object");
    return checkClaims(payload, key.jwk.kid, nowMs, toleranceMs);
  }

  return {
    async reload() {
      const loaded = await loadVerificationKeys(options.db, new Date(options.now()));
      const next = new Map<string, LoadedKey>();
      for (const key of loaded) {
        next.set(key.kid, {
          jwk: key.publicJwk,
          publicKey: createPublicKey({ key: { ...key.publicJwk }, format: "jwk" }),
          retiredAtMs: key.retiredAtMs,
        });
      }
      keys = next;
      cache.clear();
    },

    verify(token, nowMs) {
      if (token.length > MAX_TOKEN_CHARS) return credentialFailure("ERR_TOKEN_MALFORMED", "token is too long");
      const cacheKey = tokenCacheKey(token);
      const cached = cache.get(cacheKey, nowMs);
      if (cached !== undefined && usableKey(cached.kid, nowMs) !== undefined) return cached;
      const result = verifyUncached(token, nowMs);
      if (result.ok) cache.set(cacheKey, result, result.expiresAtMs + toleranceMs);
      return result;
    },

    jwksDocument() {
      const nowMs = options.now();
      const jwks = [...keys.values()].filter((k) => usableKey(k.jwk.kid, nowMs) !== undefined).map((k) => k.jwk);
      return { keys: jwks };
    },
  };
}

function splitCompact(token: string): [string, string, string] | undefined {
  const parts = token.split(".");
  if (parts.length !== 3) return undefined;
  const [header, payload, signature] = parts as [string, string, string];
  if (!BASE64URL.test(header) || !BASE64URL.test(payload) || !BASE64URL.test(signature)) return undefined;
  return [header, payload, signature];
}

function decodeJsonPart(part: string): Readonly<Record<string, unknown>> | undefined {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, "base64url").toString("utf8"));
    return typeof value === "object" && value !== null && !Array.isArray(value) ? (value as Record<string, unknown>) : undefined;
  } catch {
    // Safe to swallow: undefined means "not JSON", reported by the caller as malformed.
    return undefined;
  }
}

/** iss, aud, exp (required), nbf (if any), then the licence claims. */
function checkClaims(payload: Readonly<Record<string, unknown>>, kid: string, nowMs: number, toleranceMs: number): LicenseTokenVerification {
  if (payload.iss !== LICENSE_TOKEN_ISSUER) return credentialFailure("ERR_CLAIM_INVALID", 'token "iss" claim is not accepted');
  const aud = payload.aud;
  if (!(aud === LICENSE_TOKEN_AUDIENCE || (Array.isArray(aud) && aud.includes(LICENSE_TOKEN_AUDIENCE)))) {
    return credentialFailure("ERR_CLAIM_INVALID", 'token "aud" claim is not accepted');
  }
  const exp = payload.exp;
  if (typeof exp !== "number" || !Number.isFinite(exp)) return credentialFailure("ERR_CLAIM_INVALID", 'token lacks the "exp" claim');
  if (nowMs >= exp * 1000 + toleranceMs) return credentialFailure("ERR_TOKEN_EXPIRED", "token has expired");
  const nbf = payload.nbf;
  if (nbf !== undefined && (typeof nbf !== "number" || nowMs + toleranceMs < nbf * 1000)) {
    return credentialFailure("ERR_TOKEN_NOT_YET_VALID", "token is not valid yet (nbf)");
  }
  const { sub, account, plan } = payload;
  const entitlements = tokenEntitlements(payload.ents);
  if (typeof sub !== "string" || sub === "" || typeof account !== "string" || typeof plan !== "string" || entitlements === undefined) {
    return credentialFailure("ERR_CLAIM_INVALID", "token lacks valid licence claims (sub, account, plan, ents)");
  }
  return Object.freeze({ ok: true, licenseId: sub, accountId: account, plan, entitlements, kid, expiresAtMs: exp * 1000 });
}

function tokenEntitlements(value: unknown): readonly TokenEntitlement[] | undefined {
  if (!Array.isArray(value)) return undefined;
  const out: TokenEntitlement[] = [];
  for (const item of value as unknown[]) {
    if (typeof item !== "object" || item === null) return undefined;
    const { feature, kind, limit, period } = item as Record<string, unknown>;
    if (typeof feature !== "string" || typeof kind !== "string") return undefined;
    out.push({
      feature,
      kind: kind as EntitlementKind,
      ...(typeof limit === "number" ? { limit } : {}),
      ...(typeof period === "string" ? { period: period as EntitlementPeriod } : {}),
    });
  }
  return Object.freeze(out);
}

function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
