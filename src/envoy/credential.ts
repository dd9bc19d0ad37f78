/**
 * The credential of a proxied request: `Authorization: Bearer …` or `X-Api-Key`, and which kind
 * of CheckRequest credential it is.
 *
 * Kinds: `Bearer lk_…` and `X-Api-Key` are API keys; any other bearer value is a JWT, either a
 * licence token (this service's) or an identity-provider token. A licence token is recognised by
 * a hint from the proxy (context extension / X-License-Credential `license_token`), or else by
 * its unverified `iss`; nothing here trusts that claim: the Check verifies the token either way,
 * and a token sent as the wrong kind simply fails verification.
 */
import type { CheckRequest } from "../gen/licensing/v1/licensing_pb.js";

/** A request header by lower-case name, or undefined. */
export type HeaderLookup = (name: string) => string | undefined;

/** The header names a credential can come from. */
export type CredentialHeader = "authorization" | "x-api-key";

export interface FoundCredential {
  readonly credential: CheckRequest["credential"];
  /** Where it came from, so that header alone can be removed from the upstream request. */
  readonly header: CredentialHeader;
}

/** What a proxy may say about the bearer value's kind. */
export type CredentialHint = "license_token" | "bearer_token" | undefined;

/** Prefix shared by the service's API keys (`lk_live_`) and service tokens (`lk_svc_`). */
const API_KEY_PREFIX = "lk_";
/** Longer tokens are not inspected (the Check rejects them as too long anyway). */
const MAX_INSPECTED_TOKEN_CHARS = 8192;

/**
 * Reads the credential; `Authorization` wins over `X-Api-Key` when both are present. Undefined
 * when neither carries a usable value (no header, a non-Bearer scheme, an empty value): the
 * caller answers 401, never an RPC error.
 */
export function findCredential(header: HeaderLookup, hint: CredentialHint, licenseTokenIssuer: string): FoundCredential | undefined {
  const bearer = bearerValue(header("authorization"));
  if (bearer !== undefined) {
    return { credential: bearerCredential(bearer, hint, licenseTokenIssuer), header: "authorization" };
  }
  const apiKey = header("x-api-key")?.trim();
  if (apiKey !== undefined && apiKey.length > 0) return { credential: { case: "apiKey", value: apiKey }, header: "x-api-key" };
  return undefined;
}

/** Parses a credential hint value; anything unknown is no hint. */
export function parseCredentialHint(value: string | undefined): CredentialHint {
  return value === "license_token" || value === "bearer_token" ? value : undefined;
}

/** The token of `Bearer <token>` (scheme case-insensitive), or undefined. */
function bearerValue(authorization: string | undefined): string | undefined {
  if (authorization === undefined || authorization.length < 8) return undefined;
  if (authorization.slice(0, 7).toLowerCase() !== "bearer ") return undefined;
  const token = authorization.slice(7).trim();
  return token.length > 0 ? token : undefined;
}

function bearerCredential(token: string, hint: CredentialHint, licenseTokenIssuer: string): CheckRequest["credential"] {
  if (token.startsWith(API_KEY_PREFIX)) return { case: "apiKey", value: token };
  if (hint === "license_token") return { case: "licenseToken", value: token };
  if (hint === "bearer_token") return { case: "bearerToken", value: token };
  return unverifiedIssuer(token) === licenseTokenIssuer
    ? { case: "licenseToken", value: token }
    : { case: "bearerToken", value: token };
}

/** The `iss` claim of a compact JWS, without verifying anything; undefined when unreadable. */
export function unverifiedIssuer(token: string): string | undefined {
  if (token.length > MAX_INSPECTED_TOKEN_CHARS) return undefined;
  const first = token.indexOf(".");
  const second = first === -1 ? -1 : token.indexOf(".", first + 1);
  if (second === -1) return undefined;
  try {
    const payload: unknown = JSON.parse(Buffer.from(token.slice(first + 1, second), "base64url").toString("utf8"));
    if (typeof payload !== "object" || payload === null) return undefined;
    const iss = (payload as { iss?: unknown }).iss;
    return typeof iss === "string" ? iss : undefined;
  } catch {
    // Not a JWT: it is sent as an identity-provider token and fails verification there.
    return undefined;
  }
}
