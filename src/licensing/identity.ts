/**
 * Who is asking: turns a Check's credential into an identity (a licence, or an account, plus
 * roles) or a deny. Answers synchronously whenever the credential is cached: API keys by hash,
 * verified tokens by their own caches.
 *
 * A credential that cannot be looked up because Postgres is unreachable is a deny with
 * BACKEND_UNAVAILABLE: without knowing the licence there is no entitlement whose failure mode
 * could allow it, so it fails closed.
 */
import { Reason } from "../gen/licensing/v1/licensing_pb.js";
import type { CheckRequest } from "../gen/licensing/v1/licensing_pb.js";
import { unauthenticated } from "../server/errors.js";
import type { RpcContext } from "../server/rpc.js";
import { hashApiKey } from "./api-keys.js";
import { keyVerdict, type Verdict } from "./decide.js";
import { MISS, type LoadingCache } from "./loading-cache.js";
import type { ApiKeyRecord } from "./snapshot.js";
import { isPromise, type MaybePromise } from "./sync.js";

export interface Identity {
  /** The licence the credential names; absent when it names an account. */
  readonly licenseId?: string;
  /** The account the credential names (JWTs whose issuer maps an account claim). */
  readonly accountId?: string;
  /** Roles or scopes the credential carries. */
  readonly roles: readonly string[];
}

export type Resolution = { readonly identity: Identity; readonly denied?: undefined } | { readonly denied: Verdict };

/** A verifier of bearer or licence tokens with its own cache of verified tokens. */
export interface TokenVerifier {
  /** The cached result for this token, or MISS. */
  peek(token: string, nowMs: number): Resolution | typeof MISS;
  verify(token: string, nowMs: number): Promise<Resolution>;
}

/** Whether a caller presenting this authorization header may name licences directly. */
export type ServiceCallerCheck = (authorization: string | undefined, nowMs: number) => MaybePromise<boolean>;

export interface IdentityDeps {
  /** API keys by the SHA-256 hex of their secret. */
  readonly keys: LoadingCache<string, ApiKeyRecord>;
  readonly bearerTokens?: TokenVerifier;
  readonly licenseTokens?: TokenVerifier;
  readonly serviceCallers?: ServiceCallerCheck;
}

export type Credential = CheckRequest["credential"];

/** Where a caller's headers are read: the call's RpcContext, or anything with the same lookup. */
export type HeaderSource = Pick<RpcContext, "header">;

export type IdentityResolver = (credential: Credential, headers: HeaderSource, nowMs: number) => MaybePromise<Resolution>;

const UNKNOWN_KEY: Resolution = { denied: { allow: false, reason: Reason.UNKNOWN_CREDENTIAL, message: "unknown API key" } };

export const BACKEND_DOWN_VERDICT: Verdict = {
  allow: false,
  reason: Reason.BACKEND_UNAVAILABLE,
  message: "the licence database is unreachable and this credential or licence is not cached",
};

const BACKEND_DOWN: Resolution = { denied: BACKEND_DOWN_VERDICT };

/**
 * Most secret→hash pairs remembered. Hashing a key is the largest fixed cost of a Check from
 * memory; known keys are few and repeat, so their hashes are kept. Only keys that resolved are
 * remembered (a flood of random keys cannot evict them), and the secrets kept are the ones the
 * process holds while serving their callers anyway.
 */
const MAX_REMEMBERED_HASHES = 10_000;

export function createIdentityResolver(deps: IdentityDeps): IdentityResolver {
  const hashes = new Map<string, string>();

  function remember(secret: string, hash: string): void {
    if (hashes.size >= MAX_REMEMBERED_HASHES) hashes.clear();
    hashes.set(secret, hash);
  }

  function fromKey(key: ApiKeyRecord | undefined, nowMs: number): Resolution {
    if (key === undefined) return UNKNOWN_KEY;
    const keyDenied = keyVerdict(key, nowMs);
    return keyDenied === undefined ? { identity: { licenseId: key.licenseId, roles: key.scopes } } : { denied: keyDenied };
  }

  function apiKey(secret: string, nowMs: number): MaybePromise<Resolution> {
    const known = hashes.get(secret);
    const hash = known ?? hashApiKey(secret);
    const cached = deps.keys.peek(hash);
    if (cached !== MISS) {
      if (known === undefined && cached !== undefined) remember(secret, hash);
      return fromKey(cached, nowMs);
    }
    return deps.keys.get(hash).then(
      (key) => {
        if (key !== undefined) remember(secret, hash);
        return fromKey(key, nowMs);
      },
      () => BACKEND_DOWN,
    );
  }

  function token(verifier: TokenVerifier | undefined, value: string, kind: string, nowMs: number): MaybePromise<Resolution> {
    if (verifier === undefined) {
      return { denied: { allow: false, reason: Reason.INVALID_TOKEN, message: `${kind} are not accepted by this service` } };
    }
    const cached = verifier.peek(value, nowMs);
    return cached !== MISS ? cached : verifier.verify(value, nowMs);
  }

  function licenseId(id: string, authorization: string | undefined, nowMs: number): MaybePromise<Resolution> {
    const allowed = deps.serviceCallers?.(authorization, nowMs) ?? false;
    const decide = (ok: boolean): Resolution => {
      if (!ok) throw unauthenticated("naming a licence directly (license_id) needs a service token with that right");
      return { identity: { licenseId: id, roles: [] } };
    };
    if (!isPromise(allowed)) return decide(allowed);
    // A service token that cannot be looked up: as for an uncached key, fail closed.
    return allowed.then(decide, (): Resolution => BACKEND_DOWN);
  }

  return (credential, headers, nowMs) => {
    switch (credential.case) {
      case "apiKey":
        return apiKey(credential.value, nowMs);
      case "bearerToken":
        return token(deps.bearerTokens, credential.value, "identity-provider tokens", nowMs);
      case "licenseToken":
        return token(deps.licenseTokens, credential.value, "licence tokens", nowMs);
      case "licenseId":
        return licenseId(credential.value, headers.header("authorization"), nowMs);
      case undefined:
        // validateCheckRequest rejects a missing credential before resolution.
        return UNKNOWN_KEY;
    }
  };
}
