/**
 * API key secrets: generation, hashing, and a cheap shape test.
 *
 * A secret is `lk_live_` followed by 43 base62 characters encoding 32 random bytes (256 bits,
 * so guessing is hopeless and a plain SHA-256 is a sufficient hash: there is no low-entropy
 * password to brute-force, and lookup by hash stays one map access on the hot path). Base62
 * rather than base64url so a double-click selects the whole key. Only the hash and the 12
 * character prefix are ever stored; the secret is returned once to whoever created the key and
 * must never be logged.
 */
import { createHash, randomBytes } from "node:crypto";

export const API_KEY_SCHEME = "lk_live_";
/** Characters of the secret kept as its non-secret, listable prefix ("lk_live_3fQ9"). */
export const API_KEY_PREFIX_LENGTH = 12;

const ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
const SECRET_BYTES = 32;
/** ceil(256 / log2(62)): every 32-byte value fits, shorter encodings are left-padded. */
const BODY_LENGTH = 43;
const SHAPE = new RegExp(`^${API_KEY_SCHEME}[0-9A-Za-z]{${BODY_LENGTH}}$`);

export interface GeneratedApiKey {
  /** The whole key, to be shown once. */
  readonly secret: string;
  /** The first 12 characters of the secret. */
  readonly prefix: string;
  /** Lower-case hex SHA-256 of the secret: what is stored. */
  readonly hash: string;
}

/** A new random key; `randomBytes` is the CSPRNG (it throws only if the OS has no entropy). */
export function generateApiKey(): GeneratedApiKey {
  const secret = API_KEY_SCHEME + toBase62(randomBytes(SECRET_BYTES));
  return { secret, prefix: apiKeyPrefix(secret), hash: hashApiKey(secret) };
}

/** Lower-case hex SHA-256 of the UTF-8 secret; deterministic, what `api_keys.secret_hash` holds. */
export function hashApiKey(secret: string): string {
  return createHash("sha256").update(secret, "utf8").digest("hex");
}

/** The listable prefix of a secret. */
export function apiKeyPrefix(secret: string): string {
  return secret.slice(0, API_KEY_PREFIX_LENGTH);
}

/**
 * True if `s` has the shape of a key this module generates. A shape test only: it lets callers
 * tell an API key from a JWT and reject garbage before hashing; it says nothing of validity.
 */
export function looksLikeApiKey(s: string): boolean {
  return SHAPE.test(s);
}

/** Fixed-width (43 character) base62 of a 32-byte buffer, most significant digit first. */
function toBase62(bytes: Buffer): string {
  let n = BigInt(`0x${bytes.toString("hex")}`);
  let out = "";
  while (n > 0n) {
    out = ALPHABET.charAt(Number(n % 62n)) + out;
    n /= 62n;
  }
  return out.padStart(BODY_LENGTH, ALPHABET.charAt(0));
}
