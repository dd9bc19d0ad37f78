import { mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, test } from "vitest";
import {
  ensureSigningSecretFile,
  parseSigningSecret,
  readSigningSecretFile,
  signingSecretPath,
} from "../../src/licensing/credentials/signing-secret.js";

describe("the signing secret (key-encryption key)", () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), "signing-secret-"));
  });
  afterEach(() => rm(dir, { recursive: true, force: true }));

  test("embedded mode generates 32 random bytes into DATA_DIR/signing-secret, mode 0600, once", async () => {
    const first = await ensureSigningSecretFile(join(dir, "data"));
    expect(first).toHaveLength(32);
    const file = signingSecretPath(join(dir, "data"));
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(parseSigningSecret(await readFile(file, "utf8"))).toEqual(first);
    expect(await ensureSigningSecretFile(join(dir, "data"))).toEqual(first);
  });

  test("concurrent first starts agree on one secret", async () => {
    const secrets = await Promise.all([1, 2, 3].map(() => ensureSigningSecretFile(dir)));
    expect(secrets[1]).toEqual(secrets[0]);
    expect(secrets[2]).toEqual(secrets[0]);
  });

  test("no file reads as undefined; a corrupt file is an error naming the file", async () => {
    expect(await readSigningSecretFile(dir)).toBeUndefined();
    await writeFile(signingSecretPath(dir), "c2hvcnQ=\n");
    await expect(readSigningSecretFile(dir)).rejects.toThrow(`${signingSecretPath(dir)}: must decode to 32 bytes, got 5`);
  });

  test("SIGNING_SECRET values: base64 or base64url of 32 bytes; anything else says what is expected", () => {
    const bytes = Buffer.alloc(32, 0xfb);
    expect(parseSigningSecret(bytes.toString("base64"))).toEqual(bytes);
    expect(parseSigningSecret(`${bytes.toString("base64url")}\n`)).toEqual(bytes);
    expect(() => parseSigningSecret("not base64!")).toThrow(/must be 32 random bytes in base64/);
    expect(() => parseSigningSecret(Buffer.alloc(16).toString("base64"))).toThrow(/must decode to 32 bytes, got 16/);
  });
});
