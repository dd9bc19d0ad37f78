/**
 * Why a credential was refused: one union of codes for every credential kind (JWTs, licence
 * tokens, service tokens), each mapped to exactly one Check reason. A refusal is a result, not
 * an exception: verifiers return a `CredentialFailure`; they throw only for programming errors.
 */
import { Reason } from "../../gen/licensing/v1/licensing_pb.js";

export type CredentialErrorCode =
  /** Not a compact JWS with a JSON header and payload. */
  | "ERR_TOKEN_MALFORMED"
  /** The unverified `iss` names no configured issuer. */
  | "ERR_UNKNOWN_ISSUER"
  /** The header's `alg` is not in the allow-list ("none" and HS* never are). */
  | "ERR_ALGORITHM_NOT_ALLOWED"
  /** No key of the issuer (or of this service) has the header's `kid`, even after a refetch. */
  | "ERR_UNKNOWN_KEY"
  /** The signature does not verify (tampered token, or signed by another key). */
  | "ERR_SIGNATURE_INVALID"
  /** A claim is missing or wrong: iss, aud, exp, iat, the licence/account claim. */
  | "ERR_CLAIM_INVALID"
  /** `exp` is in the past (beyond the leeway). */
  | "ERR_TOKEN_EXPIRED"
  /** `nbf` is in the future (beyond the leeway). */
  | "ERR_TOKEN_NOT_YET_VALID"
  /** The issuer's key set could not be fetched: no safe answer either way. */
  | "ERR_JWKS_UNAVAILABLE"
  /** A service token that is unknown, revoked, expired or lacks the right. */
  | "ERR_NOT_AUTHORIZED";

export interface CredentialFailure {
  readonly ok: false;
  readonly code: CredentialErrorCode;
  /** The Check reason to answer with. */
  readonly reason: Reason;
  /** Safe to show the caller: names the problem, never echoes the token. */
  readonly message: string;
}

const REASONS: Readonly<Record<CredentialErrorCode, Reason>> = {
  ERR_TOKEN_MALFORMED: Reason.INVALID_TOKEN,
  ERR_UNKNOWN_ISSUER: Reason.INVALID_TOKEN,
  ERR_ALGORITHM_NOT_ALLOWED: Reason.INVALID_TOKEN,
  ERR_UNKNOWN_KEY: Reason.INVALID_TOKEN,
  ERR_SIGNATURE_INVALID: Reason.INVALID_TOKEN,
  ERR_CLAIM_INVALID: Reason.INVALID_TOKEN,
  ERR_TOKEN_EXPIRED: Reason.TOKEN_EXPIRED,
  ERR_TOKEN_NOT_YET_VALID: Reason.TOKEN_EXPIRED,
  ERR_JWKS_UNAVAILABLE: Reason.BACKEND_UNAVAILABLE,
  ERR_NOT_AUTHORIZED: Reason.UNKNOWN_CREDENTIAL,
};

/** The Check reason for a code. */
export function reasonFor(code: CredentialErrorCode): Reason {
  return REASONS[code];
}

export function credentialFailure(code: CredentialErrorCode, message: string): CredentialFailure {
  return Object.freeze({ ok: false, code, reason: REASONS[code], message });
}
