/**
 * Service tokens on the hot path: `authorization: Bearer lk_svc_...` resolved, by the SHA-256 of
 * the secret, to the token's id and rights, through a loading cache (a hit costs no promise;
 * concurrent misses share one query; unknown hashes are remembered briefly; failures are never
 * cached). A revoked or expired token is not valid. Call `invalidate(hash)` when
 * `licensing_changes` says "service_token:<hash>", `invalidateAll()` after an Apply.
 */
import type { Kysely } from "kysely";
import type { Database } from "../../store/schema.js";
import { createLoadingCache, MISS, type LoadingCache } from "../loading-cache.js";
import { credentialFailure, type CredentialFailure } from "./errors.js";
import { nonNegativeInteger } from "./jwt.js";
import { hashServiceToken, looksLikeServiceToken } from "./service-token-secrets.js";

/** The only right so far: the caller may name licences directly (Report/Scale by license_id). */
export const LICENSE_ID_RIGHT = "license_id";

/** A service token as the hot path sees it: never the secret. */
export interface ServiceTokenRecord {
  readonly id: string;
  readonly rights: readonly string[];
  readonly expiresAtMs: number | null;
  readonly revokedAtMs: number | null;
}

export type ServiceAuthorization =
  | { readonly ok: true; readonly tokenId: string; readonly rights: readonly string[] }
  | CredentialFailure;

export interface ServiceTokenAuthorizerOptions {
  readonly db: Kysely<Database>;
  /** Epoch ms; used for the negative cache's clock. */
  readonly now: () => number;
  /** How long an unknown token is remembered as unknown, ms. Default 2000. */
  readonly unknownTokenCacheMs?: number;
}

export interface ServiceTokenAuthorizer {
  /**
   * Whether the caller presenting `authorizationHeader` ("Bearer lk_svc_...") may name licences
   * directly at `nowMs`. Synchronous when the token is cached; a promise only on a miss.
   * Rejects only when the database cannot be read.
   */
  authorizeLicenseIdCaller(authorizationHeader: string | undefined, nowMs: number): ServiceAuthorization | Promise<ServiceAuthorization>;
  /** The valid token's id and rights, or a failure; same caching as above. */
  resolve(authorizationHeader: string | undefined, nowMs: number): ServiceAuthorization | Promise<ServiceAuthorization>;
  invalidate(secretHash: string): void;
  invalidateAll(): void;
}

export function createServiceTokenAuthorizer(options: ServiceTokenAuthorizerOptions): ServiceTokenAuthorizer {
  const cache: LoadingCache<string, ServiceTokenRecord> = createLoadingCache({
    load: (hash) => findServiceTokenByHash(options.db, hash),
    negativeTtlMs: nonNegativeInteger(options.unknownTokenCacheMs, 2000, "unknownTokenCacheMs"),
    now: options.now,
  });

  function resolve(header: string | undefined, nowMs: number): ServiceAuthorization | Promise<ServiceAuthorization> {
    const secret = bearerSecret(header);
    if (secret === undefined) return NO_TOKEN;
    if (!looksLikeServiceToken(secret)) return UNKNOWN;
    const hash = hashServiceToken(secret);
    const hit = cache.peek(hash);
    if (hit !== MISS) return judge(hit, nowMs);
    return cache.get(hash).then((record) => judge(record, nowMs));
  }

  function withRight(result: ServiceAuthorization): ServiceAuthorization {
    if (!result.ok || result.rights.includes(LICENSE_ID_RIGHT)) return result;
    return credentialFailure("ERR_NOT_AUTHORIZED", `the service token lacks the "${LICENSE_ID_RIGHT}" right`);
  }

  return {
    authorizeLicenseIdCaller(header, nowMs) {
      const result = resolve(header, nowMs);
      return result instanceof Promise ? result.then(withRight) : withRight(result);
    },
    resolve,
    invalidate: (hash) => cache.invalidate(hash),
    invalidateAll: () => cache.invalidateAll(),
  };
}

const NO_TOKEN = credentialFailure("ERR_NOT_AUTHORIZED", "naming a licence directly needs authorization: Bearer <service token>");
const UNKNOWN = credentialFailure("ERR_NOT_AUTHORIZED", "the service token is not valid");

function judge(record: ServiceTokenRecord | undefined, nowMs: number): ServiceAuthorization {
  if (record === undefined) return UNKNOWN;
  if (record.revokedAtMs !== null && record.revokedAtMs <= nowMs) return credentialFailure("ERR_NOT_AUTHORIZED", "the service token is revoked");
  if (record.expiresAtMs !== null && record.expiresAtMs <= nowMs) return credentialFailure("ERR_NOT_AUTHORIZED", "the service token has expired");
  return { ok: true, tokenId: record.id, rights: record.rights };
}

/** The secret of "Bearer <secret>" (scheme case-insensitive), or undefined. */
function bearerSecret(header: string | undefined): string | undefined {
  if (header === undefined) return undefined;
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return match?.[1];
}

/** The token with this secret hash, or undefined. */
export async function findServiceTokenByHash(db: Kysely<Database>, secretHash: string): Promise<ServiceTokenRecord | undefined> {
  const row = await db
    .selectFrom("service_tokens")
    .select(["id", "rights", "expires_at", "revoked_at"])
    .where("secret_hash", "=", secretHash)
    .executeTakeFirst();
  if (row === undefined) return undefined;
  return Object.freeze({
    id: row.id,
    rights: Object.freeze([...row.rights]),
    expiresAtMs: row.expires_at === null ? null : new Date(row.expires_at).getTime(),
    revokedAtMs: row.revoked_at === null ? null : new Date(row.revoked_at).getTime(),
  });
}
