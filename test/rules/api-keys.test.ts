import { createHash } from "node:crypto";
import { describe, expect, test } from "vitest";
import { generateApiKey, hashApiKey, looksLikeApiKey } from "../../src/licensing/api-keys.js";

describe("API keys", () => {
  test("a generated secret is lk_live_ plus 43 base62 characters (32 random bytes)", () => {
    const { secret } = generateApiKey();
    expect(secret).toMatch(/^lk_live_[0-9A-Za-z]{43}$/);
    expect(looksLikeApiKey(secret)).toBe(true);
  });

  test("the prefix is the first 12 characters and the hash is the hex SHA-256 of the secret", () => {
    const { secret, prefix, hash } = generateApiKey();
    expect(prefix).toBe(secret.slice(0, 12));
    expect(prefix.startsWith("lk_live_")).toBe(true);
    expect(hash).toBe(createHash("sha256").update(secret).digest("hex"));
    expect(hash).toMatch(/^[0-9a-f]{64}$/);
  });

  test("hashApiKey is deterministic and matches a known SHA-256", () => {
    expect(hashApiKey("abc")).toBe("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  });

  test("two generated keys never share a secret, prefix aside", () => {
    const secrets = new Set(Array.from({ length: 200 }, () => generateApiKey().secret));
    expect(secrets.size).toBe(200);
  });

  test("looksLikeApiKey rejects other shapes", () => {
    expect(looksLikeApiKey("")).toBe(false);
    expect(looksLikeApiKey("lk_live_short")).toBe(false);
    expect(looksLikeApiKey(`lk_test_${"a".repeat(43)}`)).toBe(false);
    expect(looksLikeApiKey(`lk_live_${"a".repeat(42)}-`)).toBe(false);
    expect(looksLikeApiKey("eyJhbGciOiJFZERTQSJ9.e30.sig")).toBe(false);
  });
});
