import { describe, expect, it } from "vitest";
import { createLoadingCache, MISS } from "../../src/licensing/loading-cache.js";

function deferred<T>() {
  let resolve!: (value: T) => void;
  let reject!: (error: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

describe("loading cache", () => {
  it("concurrent misses for one key share a single load", async () => {
    let loads = 0;
    const pending = deferred<string | undefined>();
    const cache = createLoadingCache<string, string>({
      load: () => {
        loads++;
        return pending.promise;
      },
      negativeTtlMs: 0,
      now: () => 0,
    });
    const all = Promise.all([cache.get("a"), cache.get("a"), cache.get("a")]);
    pending.resolve("value");
    expect(await all).toEqual(["value", "value", "value"]);
    expect(loads).toBe(1);
    expect(cache.peek("a")).toBe("value");
  });

  it("a failed load is not cached: the next call loads again", async () => {
    let loads = 0;
    const cache = createLoadingCache<string, string>({
      load: async () => {
        loads++;
        if (loads === 1) throw new Error("database down");
        return "value";
      },
      negativeTtlMs: 1000,
      now: () => 0,
    });
    await expect(cache.get("a")).rejects.toThrow("database down");
    expect(cache.peek("a")).toBe(MISS);
    expect(await cache.get("a")).toBe("value");
    expect(loads).toBe(2);
  });

  it("not-found is remembered only for negativeTtlMs", async () => {
    let now = 0;
    let loads = 0;
    const cache = createLoadingCache<string, string>({
      load: async () => {
        loads++;
        return undefined;
      },
      negativeTtlMs: 100,
      now: () => now,
    });
    expect(await cache.get("k")).toBeUndefined();
    expect(cache.peek("k")).toBeUndefined();
    now = 99;
    await cache.get("k");
    expect(loads).toBe(1);
    now = 100;
    expect(cache.peek("k")).toBe(MISS);
    await cache.get("k");
    expect(loads).toBe(2);
  });

  it("remembered misses are bounded, oldest dropped first", async () => {
    const cache = createLoadingCache<number, string>({
      load: async () => undefined,
      negativeTtlMs: 10_000,
      maxNegativeEntries: 3,
      now: () => 0,
    });
    for (const key of [1, 2, 3, 4]) await cache.get(key);
    expect(cache.size).toBe(3);
    expect(cache.peek(1)).toBe(MISS);
    expect(cache.peek(4)).toBeUndefined();
  });

  it("a load in flight when the key is invalidated does not store its stale result", async () => {
    const pending = deferred<string | undefined>();
    const cache = createLoadingCache<string, string>({ load: () => pending.promise, negativeTtlMs: 0, now: () => 0 });
    const first = cache.get("a");
    cache.invalidate("a");
    pending.resolve("stale");
    expect(await first).toBe("stale");
    expect(cache.peek("a")).toBe(MISS);
  });
});
