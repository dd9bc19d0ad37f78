import { Code, ConnectError } from "@connectrpc/connect";
import { describe, expect, it } from "vitest";
import { createOperationCache } from "../../src/licensing/idempotency.js";

describe("operation_id cache", () => {
  it("a retried operation gets the remembered answer until the window ends", () => {
    let now = 0;
    const cache = createOperationCache<string>({ windowMs: 100, maxEntries: 10, now: () => now });
    cache.remember("lic", "op-1", "f", "answer");
    now = 99;
    expect(cache.lookup("lic", "op-1", "f")).toBe("answer");
    now = 100;
    expect(cache.lookup("lic", "op-1", "f")).toBeUndefined();
  });

  it("operation ids are per licence: another licence's id never matches", () => {
    const cache = createOperationCache<string>({ windowMs: 100, maxEntries: 10, now: () => 0 });
    cache.remember("lic-a", "op-1", "f", "a's answer");
    expect(cache.lookup("lic-b", "op-1", "f")).toBeUndefined();
  });

  it("reusing an id for a different request is INVALID_ARGUMENT naming operation_id", () => {
    const cache = createOperationCache<string>({ windowMs: 100, maxEntries: 10, now: () => 0 });
    cache.remember("lic", "op-1", "feature-a|1", "answer");
    try {
      cache.lookup("lic", "op-1", "feature-b|1");
      expect.unreachable();
    } catch (error) {
      expect(error).toBeInstanceOf(ConnectError);
      expect((error as ConnectError).code).toBe(Code.InvalidArgument);
      expect((error as ConnectError).rawMessage).toMatch(/^operation_id: /);
    }
  });

  it("concurrent retries share the pending answer, and a failed one is forgotten", async () => {
    const cache = createOperationCache<string>({ windowMs: 100, maxEntries: 10, now: () => 0 });
    const pending = Promise.resolve("later");
    cache.remember("lic", "op-1", "f", pending);
    expect(cache.lookup("lic", "op-1", "f")).toBe(pending);
    const failing = Promise.reject(new Error("database down"));
    cache.remember("lic", "op-2", "f", failing);
    await failing.catch(() => undefined);
    await Promise.resolve();
    expect(cache.lookup("lic", "op-2", "f")).toBeUndefined();
    expect(cache.lookup("lic", "op-1", "f")).toBe("later");
  });

  it("holds at most maxEntries, forgetting the oldest", () => {
    const cache = createOperationCache<number>({ windowMs: 1000, maxEntries: 3, now: () => 0 });
    for (let i = 0; i < 5; i++) cache.remember("lic", `op-${i}`, "f", i);
    expect(cache.size).toBe(3);
    expect(cache.lookup("lic", "op-0", "f")).toBeUndefined();
    expect(cache.lookup("lic", "op-4", "f")).toBe(4);
  });
});
