/**
 * A cache in front of a slow source (Postgres), shaped for the hot path:
 *
 * - `peek` answers synchronously from memory, so a hit costs no promise and no await;
 * - identical concurrent misses share one load;
 * - a load that fails is never cached (the next call tries again);
 * - a load that finds nothing is remembered for `negativeTtlMs`, so a flood of unknown keys
 *   cannot turn into a flood of queries, and at most `maxNegativeEntries` are kept;
 * - `invalidate` drops an entry, and makes an in-flight load for it unable to store a stale
 *   result.
 */

/** What `peek` returns when the key was never loaded (or was dropped). */
export const MISS: unique symbol = Symbol("miss");

export interface LoadingCacheOptions<K, V> {
  /** Loads a value; resolves undefined when the source has none. */
  readonly load: (key: K) => Promise<V | undefined>;
  /** How long "not found" is remembered, in ms. 0 disables negative caching. */
  readonly negativeTtlMs: number;
  /** Upper bound on remembered "not found" entries; the oldest go first. */
  readonly maxNegativeEntries?: number;
  /** Clock in epoch ms (injected so tests control time). */
  readonly now: () => number;
}

export interface LoadingCache<K, V> {
  /** The cached value, undefined for a remembered "not found", or MISS. */
  peek(key: K): V | undefined | typeof MISS;
  /** The cached value, or loads it (sharing a load already under way). */
  get(key: K): Promise<V | undefined>;
  invalidate(key: K): void;
  invalidateAll(): void;
  /** Entries held (values and remembered misses). */
  readonly size: number;
}

export function createLoadingCache<K, V>(options: LoadingCacheOptions<K, V>): LoadingCache<K, V> {
  const values = new Map<K, V>();
  const notFoundUntil = new Map<K, number>();
  const pending = new Map<K, Promise<V | undefined>>();
  const maxNegative = options.maxNegativeEntries ?? 100_000;
  // Bumped by invalidation; a load that started under an older generation does not store.
  let generation = 0;

  function peek(key: K): V | undefined | typeof MISS {
    const value = values.get(key);
    if (value !== undefined) return value;
    const until = notFoundUntil.get(key);
    if (until === undefined) return MISS;
    if (until > options.now()) return undefined;
    notFoundUntil.delete(key);
    return MISS;
  }

  function rememberNotFound(key: K): void {
    if (options.negativeTtlMs <= 0) return;
    if (notFoundUntil.size >= maxNegative) {
      const oldest = notFoundUntil.keys().next();
      if (!oldest.done) notFoundUntil.delete(oldest.value);
    }
    notFoundUntil.set(key, options.now() + options.negativeTtlMs);
  }

  function startLoad(key: K): Promise<V | undefined> {
    const startedIn = generation;
    const load = options.load(key).then(
      (value) => {
        pending.delete(key);
        if (startedIn === generation) {
          if (value === undefined) rememberNotFound(key);
          else values.set(key, value);
        }
        return value;
      },
      (error: unknown) => {
        pending.delete(key);
        throw error;
      },
    );
    pending.set(key, load);
    return load;
  }

  return {
    peek,
    get(key) {
      const hit = peek(key);
      if (hit !== MISS) return Promise.resolve(hit);
      return pending.get(key) ?? startLoad(key);
    },
    invalidate(key) {
      generation++;
      values.delete(key);
      notFoundUntil.delete(key);
      pending.delete(key);
    },
    invalidateAll() {
      generation++;
      values.clear();
      notFoundUntil.clear();
      pending.clear();
    },
    get size() {
      return values.size + notFoundUntil.size;
    },
  };
}
