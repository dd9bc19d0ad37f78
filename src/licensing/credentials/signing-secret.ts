/**
 * The key-encryption key (KEK) that protects licence-token signing keys at rest: 32 bytes, given
 * as SIGNING_SECRET (base64) or, in embedded mode, generated once into DATA_DIR/signing-secret
 * (mode 0600) like the admin token, so a fresh `npm start` can issue licence tokens without
 * configuration. Losing the KEK loses the private keys (tokens already issued keep verifying
 * with the public keys until their keys retire; rotate to get a signing key again).
 */
import { randomBytes } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";

export const SIGNING_SECRET_FILE = "signing-secret";
/** Bytes of a KEK: AES-256. */
export const SIGNING_SECRET_BYTES = 32;

export function signingSecretPath(dataDir: string): string {
  return join(dataDir, SIGNING_SECRET_FILE);
}

/**
 * Decodes a KEK from base64 (standard or URL-safe, padding optional).
 * @throws Error saying what is wrong (never echoing the value); the caller prefixes the source,
 *   e.g. "SIGNING_SECRET: must be ...".
 */
export function parseSigningSecret(text: string): Buffer {
  const trimmed = text.trim();
  if (!/^[A-Za-z0-9+/_-]+={0,2}$/.test(trimmed)) {
    throw new Error(`must be ${SIGNING_SECRET_BYTES} random bytes in base64 (e.g. the output of: openssl rand -base64 32)`);
  }
  const bytes = Buffer.from(trimmed.replace(/-/g, "+").replace(/_/g, "/"), "base64");
  if (bytes.length !== SIGNING_SECRET_BYTES) {
    throw new Error(`must decode to ${SIGNING_SECRET_BYTES} bytes, got ${bytes.length} (e.g. openssl rand -base64 32)`);
  }
  return bytes;
}

/** Reads DATA_DIR/signing-secret, creating it (mode 0600) with a new random KEK when absent. */
export async function ensureSigningSecretFile(dataDir: string): Promise<Buffer> {
  const existing = await readSigningSecretFile(dataDir);
  if (existing !== undefined) return existing;
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const secret = randomBytes(SIGNING_SECRET_BYTES);
  try {
    // "wx": never overwrite a secret another process wrote in the meantime (that would orphan
    // every key it encrypted).
    await writeFile(signingSecretPath(dataDir), `${secret.toString("base64")}\n`, { mode: 0o600, flag: "wx" });
    return secret;
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== "EEXIST") throw error;
    const raced = await readSigningSecretFile(dataDir);
    if (raced === undefined) throw error;
    return raced;
  }
}

/**
 * The KEK in DATA_DIR/signing-secret, or undefined when there is no such file.
 * @throws Error naming the file when it exists but does not hold a valid KEK.
 */
export async function readSigningSecretFile(dataDir: string): Promise<Buffer | undefined> {
  const path = signingSecretPath(dataDir);
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw error;
  }
  // Empty: another process has created the file and not yet written it.
  if (text.trim() === "") return undefined;
  try {
    return parseSigningSecret(text);
  } catch (error) {
    throw new Error(`${path}: ${(error as Error).message}`, { cause: error });
  }
}
