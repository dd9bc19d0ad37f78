/**
 * A bounded LRU of verified tokens, so a token seen before is answered synchronously.
 *
 * Keys are SHA-256 digests of the token (the cache never holds a bearer credential itself, and
 * keys have a fixed size whatever the token's). Each entry carries the epoch-ms instant from
 * which it must no longer be served (the token's expiry); a `get` at or after that instant drops
 * it and misses, so an expired token always goes back to full verification and gets its
 * TOKEN_EXPIRED answer from there.
 */
import { createHash } from "node:crypto";

export interface VerifiedTokenCache<V> {
  /** The value, or undefined when absent or no longer servable at `nowMs` (then dropped). */
  get(key: string, nowMs: number): V | undefined;
  /** Remembers `value` until `untilMs` (exclusive); evicts the least recently used when full. */
  set(key: string, value: V, untilMs: number): void;
  clear(): void;
  readonly size: number;
}

/** The cache key of a token: base64 SHA-256 of its UTF-8 bytes (44 characters). */
export function tokenCacheKey(token: string): string {
  return createHash("sha256").update(token, "utf8").digest("base64");
}

/** @throws TypeError naming `option` when maxEntries is not a positive integer. */
export function createVerifiedTokenCache<V>(maxEntries: number, option = "maxEntries"): VerifiedTokenCache<V> {
  if (!Number.isSafeInteger(maxEntries) || maxEntries < 1) {
    throw new TypeError(`"${option}" must be a positive integer, got ${String(maxEntries)}`);
  }
  const entries = new Map<string, { readonly value: V; readonly untilMs: number }>();
  return {
    get(key, nowMs) {
      const entry = entries.get(key);
      if (entry === undefined) return undefined;
      entries.delete(key);
      if (nowMs >= entry.untilMs) return undefined;
      // Re-inserting moves the entry to the young end: Map iteration order is insertion order.
      entries.set(key, entry);
      return entry.value;
    },
    set(key, value, untilMs) {
      entries.delete(key);
      if (entries.size >= maxEntries) {
        const oldest = entries.keys().next();
        if (!oldest.done) entries.delete(oldest.value);
      }
      entries.set(key, { value, untilMs });
    },
    clear() {
      entries.clear();
    },
    get size() {
      return entries.size;
    },
  };
}
