/**
 * Service token secrets: `lk_svc_` followed by 43 base62 characters (32 random bytes), made and
 * hashed exactly like API keys (see ../api-keys.ts for why a plain SHA-256 is enough). Only the
 * hash and the 12-character prefix are stored; the secret is shown once, by Apply.
 */
import { API_KEY_PREFIX_LENGTH, API_KEY_SCHEME, generateApiKey, hashApiKey } from "../api-keys.js";

export const SERVICE_TOKEN_SCHEME = "lk_svc_";

const SHAPE = /^lk_svc_[0-9A-Za-z]{43}$/;

export interface GeneratedServiceToken {
  /** The whole token, to be shown once. */
  readonly secret: string;
  /** Its first 12 characters ("lk_svc_3fQ9x"), for listing and logs. */
  readonly prefix: string;
  /** Lower-case hex SHA-256 of the secret: what `service_tokens.secret_hash` holds. */
  readonly hash: string;
}

/** A new random service token. */
export function generateServiceToken(): GeneratedServiceToken {
  // Same CSPRNG bytes and base62 body as an API key; only the scheme differs.
  const body = generateApiKey().secret.slice(API_KEY_SCHEME.length);
  const secret = SERVICE_TOKEN_SCHEME + body;
  return { secret, prefix: secret.slice(0, API_KEY_PREFIX_LENGTH), hash: hashServiceToken(secret) };
}

/** Lower-case hex SHA-256 of the UTF-8 secret. */
export function hashServiceToken(secret: string): string {
  return hashApiKey(secret);
}

/** True if `s` has the shape of a service token (a shape test only, not a validity check). */
export function looksLikeServiceToken(s: string): boolean {
  return SHAPE.test(s);
}
