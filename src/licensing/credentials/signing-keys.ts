/**
 * Licence-token signing keys (Ed25519) in `signing_keys`: creation, rotation, retirement.
 *
 * At rest the private key (PKCS#8 DER) is encrypted with AES-256-GCM under the key-encryption
 * key (KEK, 32 bytes, see signing-secret.ts), with the kid as associated data so a ciphertext
 * moved to another row does not decrypt. The column holds base64url(iv ‖ ciphertext ‖ tag); the
 * private key exists in clear only in memory, only while a token is being signed.
 *
 * Rotation policy (overlap): `rotateSigningKey` creates a key, activates it, and schedules the
 * retirement of every key it supersedes at now + `retireAfterMs` (default: the longest licence
 * token lifetime, 30 days, plus 5 minutes of clock tolerance), so every token a superseded key
 * has signed expires before its key stops verifying, and nothing has to remember to retire it.
 * A retirement time in the future is a schedule: the key verifies until then but never signs
 * again. `retireSigningKey` retires a key now (e.g. on compromise): its tokens stop verifying
 * at once. Only the newest activated key without any retirement time signs; when there is none,
 * `ensureActiveSigningKey` creates one.
 */
import { createCipheriv, createDecipheriv, createPrivateKey, generateKeyPairSync, randomBytes, type KeyObject } from "node:crypto";
import { calculateJwkThumbprint, type JWK } from "jose";
import { sql, type Kysely, type Transaction } from "kysely";
import type { Database } from "../../store/schema.js";
import { SIGNING_SECRET_BYTES } from "./signing-secret.js";

/** The one algorithm licence tokens use. */
export const SIGNING_ALGORITHM = "EdDSA";
/** 30 days: the longest licence token lifetime. */
export const MAX_LICENSE_TOKEN_TTL_SECONDS = 30 * 24 * 3600;
/** Default overlap between a rotation and the superseded keys' retirement, ms. */
export const DEFAULT_RETIRE_AFTER_MS = MAX_LICENSE_TOKEN_TTL_SECONDS * 1000 + 5 * 60 * 1000;

/** An Ed25519 public key as a JWK (RFC 8037). */
export interface PublicSigningJwk {
  readonly kty: "OKP";
  readonly crv: "Ed25519";
  readonly x: string;
  readonly kid: string;
  readonly alg: "EdDSA";
  readonly use: "sig";
}

/** A key as listed: never its private part. */
export interface SigningKeyInfo {
  readonly kid: string;
  readonly createdAt: Date;
  readonly activatedAt: Date | null;
  readonly retiredAt: Date | null;
}

/** A key that verifies: public part only. */
export interface VerificationKey {
  readonly kid: string;
  readonly publicJwk: PublicSigningJwk;
  /** Epoch ms from which it no longer verifies; null: no retirement scheduled. */
  readonly retiredAtMs: number | null;
}

/** The key that signs, decrypted for the moment of signing. */
export interface SigningKey {
  readonly kid: string;
  readonly privateKey: KeyObject;
}

export interface RotateOptions {
  readonly now: Date;
  /** When superseded keys retire, ms after `now`. Default DEFAULT_RETIRE_AFTER_MS. */
  readonly retireAfterMs?: number;
}

/**
 * Creates a key, makes it the one that signs, and schedules the retirement of the keys it
 * supersedes (see the policy above). Returns the new kid.
 * @throws TypeError when the KEK is not 32 bytes or retireAfterMs is negative.
 */
export async function rotateSigningKey(db: Kysely<Database>, kek: Uint8Array, options: RotateOptions): Promise<{ kid: string }> {
  checkKek(kek);
  const retireAfterMs = options.retireAfterMs ?? DEFAULT_RETIRE_AFTER_MS;
  if (!Number.isSafeInteger(retireAfterMs) || retireAfterMs < 0) {
    throw new TypeError(`"retireAfterMs" must be an integer >= 0, got ${String(retireAfterMs)}`);
  }
  const material = await createKeyMaterial(kek);
  return db.transaction().execute(async (trx) => {
    await lockSigningKeys(trx);
    await trx
      .updateTable("signing_keys")
      .set({ retired_at: new Date(options.now.getTime() + retireAfterMs) })
      .where("retired_at", "is", null)
      .execute();
    await insertKey(trx, material, options.now);
    return { kid: material.kid };
  });
}

/**
 * The key that signs, creating one when none does (first start, or the signer was retired).
 * Concurrent callers (other replicas too) create at most one key between them.
 */
export async function ensureActiveSigningKey(db: Kysely<Database>, kek: Uint8Array, now: Date): Promise<SigningKey> {
  checkKek(kek);
  const existing = await findSigner(db);
  if (existing !== undefined) return decryptSigner(existing, kek);
  const material = await createKeyMaterial(kek);
  const row = await db.transaction().execute(async (trx) => {
    await lockSigningKeys(trx);
    const raced = await findSigner(trx);
    if (raced !== undefined) return raced;
    await insertKey(trx, material, now);
    return { kid: material.kid, private_key_encrypted: material.privateKeyEncrypted };
  });
  return decryptSigner(row, kek);
}

/**
 * Retires `kid` at `now` (or keeps an earlier retirement time). Returns false when no key has
 * that kid.
 */
export async function retireSigningKey(db: Kysely<Database>, kid: string, now: Date): Promise<boolean> {
  const key = await db.selectFrom("signing_keys").select(["kid", "retired_at"]).where("kid", "=", kid).executeTakeFirst();
  if (key === undefined) return false;
  if (key.retired_at !== null && new Date(key.retired_at).getTime() <= now.getTime()) return true;
  await db.updateTable("signing_keys").set({ retired_at: now }).where("kid", "=", kid).execute();
  return true;
}

/** Every key, newest first. */
export async function listSigningKeys(db: Kysely<Database>): Promise<SigningKeyInfo[]> {
  const rows = await db
    .selectFrom("signing_keys")
    .select(["kid", "created_at", "activated_at", "retired_at"])
    .orderBy("created_at", "desc")
    .orderBy("kid")
    .execute();
  return rows.map((row) => ({
    kid: row.kid,
    createdAt: new Date(row.created_at),
    activatedAt: row.activated_at === null ? null : new Date(row.activated_at),
    retiredAt: row.retired_at === null ? null : new Date(row.retired_at),
  }));
}

/** The keys that verify at `now`: activated, and not retired (or retiring later). */
export async function loadVerificationKeys(db: Kysely<Database>, now: Date): Promise<VerificationKey[]> {
  const rows = await db
    .selectFrom("signing_keys")
    .select(["kid", "public_jwk", "retired_at"])
    .where("activated_at", "is not", null)
    .where((eb) => eb.or([eb("retired_at", "is", null), eb("retired_at", ">", now)]))
    .orderBy("kid")
    .execute();
  return rows.map((row) => ({
    kid: row.kid,
    publicJwk: toPublicJwk(row.kid, parseJson(row.public_jwk)),
    retiredAtMs: row.retired_at === null ? null : new Date(row.retired_at).getTime(),
  }));
}

/** Encrypts a private key for the row of `kid`: base64url(iv ‖ ciphertext ‖ tag). */
export function encryptPrivateKey(pkcs8: Uint8Array, kek: Uint8Array, kid: string): string {
  checkKek(kek);
  const iv = randomBytes(12);
  const cipher = createCipheriv("aes-256-gcm", kek, iv);
  cipher.setAAD(Buffer.from(kid, "utf8"));
  const ciphertext = Buffer.concat([cipher.update(pkcs8), cipher.final()]);
  return Buffer.concat([iv, ciphertext, cipher.getAuthTag()]).toString("base64url");
}

/**
 * The PKCS#8 DER private key of the row of `kid`.
 * @throws Error when the KEK is wrong or the ciphertext was altered or belongs to another kid.
 */
export function decryptPrivateKey(encrypted: string, kek: Uint8Array, kid: string): Buffer {
  checkKek(kek);
  const blob = Buffer.from(encrypted, "base64url");
  if (blob.length < 12 + 16 + 1) throw new Error(`signing key ${kid}: encrypted private key is truncated`);
  const decipher = createDecipheriv("aes-256-gcm", kek, blob.subarray(0, 12));
  decipher.setAAD(Buffer.from(kid, "utf8"));
  decipher.setAuthTag(blob.subarray(blob.length - 16));
  try {
    return Buffer.concat([decipher.update(blob.subarray(12, blob.length - 16)), decipher.final()]);
  } catch (error) {
    throw new Error(`signing key ${kid}: the private key does not decrypt (wrong SIGNING_SECRET?)`, { cause: error });
  }
}

interface KeyMaterial {
  readonly kid: string;
  readonly publicJwk: PublicSigningJwk;
  readonly privateKeyEncrypted: string;
}

/** A fresh Ed25519 key pair; the kid is the RFC 7638 thumbprint of the public key. */
async function createKeyMaterial(kek: Uint8Array): Promise<KeyMaterial> {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  const jwk = publicKey.export({ format: "jwk" }) as JWK;
  const kid = await calculateJwkThumbprint(jwk, "sha256");
  const pkcs8 = privateKey.export({ format: "der", type: "pkcs8" });
  return { kid, publicJwk: toPublicJwk(kid, jwk), privateKeyEncrypted: encryptPrivateKey(pkcs8, kek, kid) };
}

async function insertKey(trx: Transaction<Database>, material: KeyMaterial, now: Date): Promise<void> {
  await trx
    .insertInto("signing_keys")
    .values({
      kid: material.kid,
      algorithm: SIGNING_ALGORITHM,
      public_jwk: JSON.stringify(material.publicJwk),
      private_key_encrypted: material.privateKeyEncrypted,
      created_at: now,
      activated_at: now,
      retired_at: null,
    })
    .execute();
}

/** Arbitrary, fixed: identifies "signing keys are being changed" among advisory locks. */
const SIGNING_KEYS_LOCK_KEY = 7_311_529_002;

async function lockSigningKeys(trx: Transaction<Database>): Promise<void> {
  await sql`select pg_advisory_xact_lock(${SIGNING_KEYS_LOCK_KEY})`.execute(trx);
}

interface SignerRow {
  readonly kid: string;
  readonly private_key_encrypted: string;
}

function findSigner(db: Kysely<Database>): Promise<SignerRow | undefined> {
  return db
    .selectFrom("signing_keys")
    .select(["kid", "private_key_encrypted"])
    .where("activated_at", "is not", null)
    .where("retired_at", "is", null)
    .orderBy("activated_at", "desc")
    .orderBy("kid")
    .limit(1)
    .executeTakeFirst();
}

function decryptSigner(row: SignerRow, kek: Uint8Array): SigningKey {
  const der = decryptPrivateKey(row.private_key_encrypted, kek, row.kid);
  return { kid: row.kid, privateKey: createPrivateKey({ key: der, format: "der", type: "pkcs8" }) };
}

function toPublicJwk(kid: string, jwk: Readonly<Record<string, unknown>>): PublicSigningJwk {
  if (jwk.kty !== "OKP" || jwk.crv !== "Ed25519" || typeof jwk.x !== "string") {
    throw new Error(`signing key ${kid}: public_jwk is not an Ed25519 key`);
  }
  return Object.freeze({ kty: "OKP", crv: "Ed25519", x: jwk.x, kid, alg: "EdDSA", use: "sig" });
}

/** jsonb reads as an object on both drivers; a string (another driver) is parsed. */
function parseJson(value: unknown): Readonly<Record<string, unknown>> {
  const parsed: unknown = typeof value === "string" ? JSON.parse(value) : value;
  return typeof parsed === "object" && parsed !== null ? (parsed as Record<string, unknown>) : {};
}

function checkKek(kek: Uint8Array): void {
  if (!(kek instanceof Uint8Array) || kek.length !== SIGNING_SECRET_BYTES) {
    throw new TypeError(`"kek" must be ${SIGNING_SECRET_BYTES} bytes (AES-256), got ${kek instanceof Uint8Array ? kek.length : typeof kek}`);
  }
}
