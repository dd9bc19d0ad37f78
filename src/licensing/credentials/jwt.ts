/**
 * Verification of JWTs from customers' identity providers (the `bearer_token` credential).
 *
 * Per issuer: jose's `jwtVerify` against a remote JWKS (`createRemoteJWKSet`), which caches the
 * key set, refetches it when a token names an unknown `kid` but at most once per cooldown, and
 * shares one pending fetch between concurrent callers, so a flood of unknown `kid`s cannot turn
 * into a flood of fetches. Enforced: the issuer's algorithm allow-list (asymmetric only: never
 * "none", never HS*), `iss`, `aud`, `exp` (required), `nbf`, with the issuer's leeway.
 *
 * Hot path: verified tokens are cached (by SHA-256 of the token, bounded LRU, dropped when the
 * token expires), so a repeated token is answered by `peek` synchronously. Failures are never
 * cached, except malformed tokens, briefly, so garbage repeated in a loop costs one decode.
 */
import { createRemoteJWKSet, decodeJwt, decodeProtectedHeader, errors, jwtVerify, type JWTPayload } from "jose";
import type { JWTVerifyGetKey, RemoteJWKSet } from "jose";
import { MISS } from "../loading-cache.js";
import { credentialFailure, type CredentialFailure } from "./errors.js";
import { createVerifiedTokenCache, tokenCacheKey } from "./verified-token-cache.js";

export { MISS };

/** One identity provider, as the `issuers` table and the rules file declare it. */
export interface IssuerConfig {
  readonly id: string;
  /** The exact `iss` value. */
  readonly issuer: string;
  readonly jwksUrl: string;
  /** Accepted `aud` values (any of them). */
  readonly audiences: readonly string[];
  /** Allowed JWS algorithms. */
  readonly algorithms: readonly string[];
  readonly leewaySeconds: number;
  /** Exactly one of licenseClaim and accountClaim is non-null. */
  readonly licenseClaim: string | null;
  readonly accountClaim: string | null;
  readonly rolesClaim: string;
}

/** Whom a verified JWT names: a licence, or an account (whose one active licence is meant). */
export type JwtSubject =
  | { readonly licenseId: string; readonly accountId?: undefined }
  | { readonly accountId: string; readonly licenseId?: undefined };

export type VerifiedJwt = JwtSubject & {
  readonly ok: true;
  /** The id of the issuer that vouched for the token. */
  readonly issuerId: string;
  /** From the issuer's roles claim; empty when absent. */
  readonly roles: readonly string[];
  /** The token's `exp`, epoch ms. */
  readonly expiresAtMs: number;
};

export type JwtVerification = VerifiedJwt | CredentialFailure;

export interface JwtVerifierOptions {
  /** The identity providers accepted at first; replace them with `setIssuers`. Default none. */
  readonly issuers?: readonly IssuerConfig[];
  /** Most verified tokens remembered. Default 10000. */
  readonly maxCachedTokens?: number;
  /**
   * Least time between two fetches of one JWKS caused by unknown `kid`s, ms. Default 10000: a
   * flood costs the identity provider at most one fetch per 10 s, and a key published and used
   * at once (without the usual advance publication) is picked up within 10 s.
   */
  readonly jwksCooldownMs?: number;
  /** Age after which a fetched JWKS is fetched again before use, ms. Default 600000 (10 min). */
  readonly jwksCacheMaxAgeMs?: number;
  /** Timeout of one JWKS fetch, ms. Default 5000. */
  readonly jwksTimeoutMs?: number;
  /** How long a malformed token is remembered as malformed, ms; 0 disables. Default 5000. */
  readonly malformedCacheMs?: number;
  /** Most malformed tokens remembered. Default 10000. */
  readonly maxMalformedTokens?: number;
}

export interface JwtVerifier {
  /** The cached answer for `token` at `nowMs`, synchronously, or MISS: then call `verify`. */
  peek(token: string, nowMs: number): JwtVerification | typeof MISS;
  /**
   * Verifies `token` at `nowMs` (epoch ms). Resolves a result, never rejects for a bad token;
   * an unreachable JWKS resolves ERR_JWKS_UNAVAILABLE. Rejects only on a bug.
   */
  verify(token: string, nowMs: number): Promise<JwtVerification>;
  /**
   * Replaces the accepted issuers (on start, and when `licensing_changes` says "issuers").
   * Forgets every cached verification; keeps fetched key sets whose URL is unchanged.
   */
  setIssuers(issuers: readonly IssuerConfig[]): void;
}

/** Longest token looked at; anything longer is malformed without being parsed. */
export const MAX_JWT_CHARS = 16 * 1024;
/** Most roles kept from a token; the rest are ignored. */
const MAX_ROLES = 256;

interface IssuerEntry {
  readonly config: IssuerConfig;
  readonly getKey: JWTVerifyGetKey;
}

/** @throws TypeError naming the option when an option is out of range. */
export function createJwtVerifier(options: JwtVerifierOptions = {}): JwtVerifier {
  const settings = validateOptions(options);
  const verified = createVerifiedTokenCache<VerifiedJwt>(settings.maxCachedTokens, "maxCachedTokens");
  const malformed = createVerifiedTokenCache<CredentialFailure>(settings.maxMalformedTokens, "maxMalformedTokens");
  let byIssuer = new Map<string, IssuerEntry>();
  let keySets = new Map<string, JWTVerifyGetKey>();
  // Identical concurrent verifications share one (a burst of one new token costs one verify).
  const pending = new Map<string, Promise<JwtVerification>>();
  // Bumped by setIssuers: a verification that started under older issuers does not cache.
  let generation = 0;

  function keySetFor(jwksUrl: string): JWTVerifyGetKey {
    const existing = keySets.get(jwksUrl);
    if (existing !== undefined) return existing;
    const remote = createRemoteJWKSet(new URL(jwksUrl), {
      cooldownDuration: settings.jwksCooldownMs,
      cacheMaxAge: settings.jwksCacheMaxAgeMs,
      timeoutDuration: settings.jwksTimeoutMs,
    });
    const getKey = keyResolver(remote);
    keySets.set(jwksUrl, getKey);
    return getKey;
  }

  function setIssuers(issuers: readonly IssuerConfig[]): void {
    const previous = keySets;
    keySets = new Map();
    const next = new Map<string, IssuerEntry>();
    for (const config of issuers) {
      const kept = previous.get(config.jwksUrl);
      if (kept !== undefined) keySets.set(config.jwksUrl, kept);
      next.set(config.issuer, { config, getKey: keySetFor(config.jwksUrl) });
    }
    byIssuer = next;
    generation++;
    verified.clear();
    pending.clear();
  }

  function peekByKey(key: string, nowMs: number): JwtVerification | typeof MISS {
    return verified.get(key, nowMs) ?? malformed.get(key, nowMs) ?? MISS;
  }

  function rememberMalformed(key: string, failure: CredentialFailure, nowMs: number): CredentialFailure {
    if (settings.malformedCacheMs > 0) malformed.set(key, failure, nowMs + settings.malformedCacheMs);
    return failure;
  }

  async function verifyWith(entry: IssuerEntry, token: string, key: string, nowMs: number): Promise<JwtVerification> {
    const { config } = entry;
    const startedIn = generation;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, entry.getKey, {
        algorithms: [...config.algorithms],
        issuer: config.issuer,
        audience: [...config.audiences],
        clockTolerance: config.leewaySeconds,
        requiredClaims: ["exp"],
        currentDate: new Date(nowMs),
      }));
    } catch (error) {
      return failureOf(error);
    }
    const result = toVerifiedJwt(config, payload);
    if (result.ok && startedIn === generation) {
      // jose accepts the token while now < exp + leeway; serve it from memory exactly as long.
      verified.set(key, result, result.expiresAtMs + config.leewaySeconds * 1000);
    }
    return result;
  }

  function verify(token: string, nowMs: number): Promise<JwtVerification> {
    if (token.length > MAX_JWT_CHARS) {
      return Promise.resolve(credentialFailure("ERR_TOKEN_MALFORMED", `token is longer than ${MAX_JWT_CHARS} characters`));
    }
    const key = tokenCacheKey(token);
    const cached = peekByKey(key, nowMs);
    if (cached !== MISS) return Promise.resolve(cached);
    const unverified = decodeUnverified(token);
    if (!unverified.ok) return Promise.resolve(rememberMalformed(key, unverified, nowMs));
    const entry = typeof unverified.iss === "string" ? byIssuer.get(unverified.iss) : undefined;
    if (entry === undefined) {
      return Promise.resolve(credentialFailure("ERR_UNKNOWN_ISSUER", "the token's issuer (iss) is not accepted"));
    }
    // Refused before any key lookup, so such tokens can never cause a JWKS fetch.
    if (!entry.config.algorithms.includes(unverified.alg)) {
      return Promise.resolve(credentialFailure("ERR_ALGORITHM_NOT_ALLOWED", `algorithm "${unverified.alg}" is not allowed for this issuer`));
    }
    const inFlight = pending.get(key);
    if (inFlight !== undefined) return inFlight;
    const verification = verifyWith(entry, token, key, nowMs).finally(() => pending.delete(key));
    pending.set(key, verification);
    return verification;
  }

  setIssuers(options.issuers ?? []);
  return {
    peek(token, nowMs) {
      if (token.length > MAX_JWT_CHARS) return MISS;
      return peekByKey(tokenCacheKey(token), nowMs);
    },
    verify,
    setIssuers,
  };
}

interface Settings {
  readonly maxCachedTokens: number;
  readonly jwksCooldownMs: number;
  readonly jwksCacheMaxAgeMs: number;
  readonly jwksTimeoutMs: number;
  readonly malformedCacheMs: number;
  readonly maxMalformedTokens: number;
}

function validateOptions(options: JwtVerifierOptions): Settings {
  return {
    maxCachedTokens: positiveInteger(options.maxCachedTokens, 10_000, "maxCachedTokens"),
    jwksCooldownMs: nonNegativeInteger(options.jwksCooldownMs, 10_000, "jwksCooldownMs"),
    jwksCacheMaxAgeMs: nonNegativeInteger(options.jwksCacheMaxAgeMs, 600_000, "jwksCacheMaxAgeMs"),
    jwksTimeoutMs: positiveInteger(options.jwksTimeoutMs, 5_000, "jwksTimeoutMs"),
    malformedCacheMs: nonNegativeInteger(options.malformedCacheMs, 5_000, "malformedCacheMs"),
    maxMalformedTokens: positiveInteger(options.maxMalformedTokens, 10_000, "maxMalformedTokens"),
  };
}

export function positiveInteger(value: number | undefined, fallback: number, option: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) throw new TypeError(`"${option}" must be a positive integer, got ${String(value)}`);
  return value;
}

export function nonNegativeInteger(value: number | undefined, fallback: number, option: string): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 0) throw new TypeError(`"${option}" must be an integer >= 0, got ${String(value)}`);
  return value;
}

/** Thrown by the key resolver when the key set cannot be had (network, HTTP status, JSON). */
class JwksUnavailableError extends Error {
  constructor(cause: unknown) {
    super("the issuer's key set could not be fetched", { cause });
    this.name = "JwksUnavailableError";
  }
}

/**
 * jose's remote set, with "could not fetch" told apart from "no such key": the first is not the
 * token's fault and must not read as INVALID_TOKEN.
 */
function keyResolver(remote: RemoteJWKSet): JWTVerifyGetKey {
  return async (header, input) => {
    try {
      return await remote(header, input);
    } catch (error) {
      if (
        error instanceof errors.JWKSNoMatchingKey ||
        error instanceof errors.JWKSMultipleMatchingKeys ||
        error instanceof errors.JOSENotSupported ||
        error instanceof errors.JOSEAlgNotAllowed
      ) {
        throw error;
      }
      throw new JwksUnavailableError(error);
    }
  };
}

type Unverified = { readonly ok: true; readonly iss: unknown; readonly alg: string } | CredentialFailure;

/** The unverified `iss` and `alg`, used only to pick the issuer and refuse early. */
function decodeUnverified(token: string): Unverified {
  try {
    const header = decodeProtectedHeader(token);
    const payload = decodeJwt(token);
    if (typeof header.alg !== "string") return credentialFailure("ERR_TOKEN_MALFORMED", "token header has no alg");
    return { ok: true, iss: payload.iss, alg: header.alg };
  } catch {
    // Safe to swallow: any decode error means the same thing, a token that is not a JWT.
    return credentialFailure("ERR_TOKEN_MALFORMED", "not a JWT (expected header.payload.signature)");
  }
}

/** Maps what jwtVerify threw to a failure; rethrows what is not about the token (a bug). */
function failureOf(error: unknown): CredentialFailure {
  if (error instanceof JwksUnavailableError) return credentialFailure("ERR_JWKS_UNAVAILABLE", error.message);
  if (error instanceof errors.JWTExpired) return credentialFailure("ERR_TOKEN_EXPIRED", "token has expired");
  if (error instanceof errors.JWTClaimValidationFailed) {
    if (error.claim === "nbf" && error.reason === "check_failed") {
      return credentialFailure("ERR_TOKEN_NOT_YET_VALID", "token is not valid yet (nbf)");
    }
    return credentialFailure("ERR_CLAIM_INVALID", claimMessage(error.claim, error.reason));
  }
  if (error instanceof errors.JOSEAlgNotAllowed || error instanceof errors.JOSENotSupported) {
    return credentialFailure("ERR_ALGORITHM_NOT_ALLOWED", "token algorithm is not allowed");
  }
  if (error instanceof errors.JWKSNoMatchingKey) return credentialFailure("ERR_UNKNOWN_KEY", "no key of the issuer matches the token's kid");
  if (error instanceof errors.JWKSMultipleMatchingKeys) {
    return credentialFailure("ERR_UNKNOWN_KEY", "several keys of the issuer match the token; it needs a kid");
  }
  if (error instanceof errors.JWSSignatureVerificationFailed) return credentialFailure("ERR_SIGNATURE_INVALID", "token signature is not valid");
  if (error instanceof errors.JOSEError) return credentialFailure("ERR_TOKEN_MALFORMED", "token is not a valid JWS");
  throw error;
}

function claimMessage(claim: string, reason: string): string {
  return reason === "missing" ? `token lacks the "${claim}" claim` : `token "${claim}" claim is not accepted`;
}

/** The verified payload as a result: the subject claim, the roles, the expiry. */
function toVerifiedJwt(config: IssuerConfig, payload: JWTPayload): JwtVerification {
  // requiredClaims guarantees exp is present and jose checked it is a number.
  const expiresAtMs = (payload.exp ?? 0) * 1000;
  const roles = rolesOf(claimAt(payload, config.rolesClaim));
  const base = { ok: true as const, issuerId: config.id, roles, expiresAtMs };
  const claim = config.licenseClaim ?? config.accountClaim ?? "";
  const value = claimAt(payload, claim);
  if (typeof value !== "string" || value === "" || value.length > 256) {
    return credentialFailure("ERR_CLAIM_INVALID", `token lacks a valid "${claim}" claim`);
  }
  return Object.freeze(config.licenseClaim !== null ? { ...base, licenseId: value } : { ...base, accountId: value });
}

/**
 * A claim by name: the top-level claim of exactly that name when present (so namespaced claims
 * like "https://acme.example/roles" work), else a dotted path into nested objects
 * ("realm_access.roles").
 */
export function claimAt(payload: Readonly<Record<string, unknown>>, name: string): unknown {
  if (Object.hasOwn(payload, name)) return payload[name];
  if (!name.includes(".")) return undefined;
  let value: unknown = payload;
  for (const part of name.split(".")) {
    if (typeof value !== "object" || value === null || Array.isArray(value)) return undefined;
    value = Object.hasOwn(value, part) ? (value as Record<string, unknown>)[part] : undefined;
  }
  return value;
}

/** Roles from an array of strings (other items ignored) or a space-separated string (OAuth scope). */
export function rolesOf(value: unknown): readonly string[] {
  const list = typeof value === "string" ? value.split(/\s+/) : Array.isArray(value) ? value : [];
  const roles: string[] = [];
  for (const item of list) {
    if (typeof item === "string" && item !== "" && roles.length < MAX_ROLES) roles.push(item);
  }
  return Object.freeze(roles);
}
