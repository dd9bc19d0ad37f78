/**
 * Adapters from the credential verifiers (src/licensing/credentials) to the identity
 * resolver's seams: a verified token becomes an identity, a refusal a deny with its reason.
 */
import type { JwtVerification, JwtVerifier } from "./credentials/jwt.js";
import type { LicenseTokenVerification, LicenseTokenVerifier } from "./credentials/license-tokens.js";
import type { ServiceTokenAuthorizer } from "./credentials/service-tokens.js";
import type { Resolution, ServiceCallerCheck, TokenVerifier } from "./identity.js";
import { MISS } from "./loading-cache.js";
import { andThen } from "./sync.js";

function fromJwt(result: JwtVerification): Resolution {
  if (!result.ok) return { denied: { allow: false, reason: result.reason, message: result.message } };
  return result.licenseId !== undefined
    ? { identity: { licenseId: result.licenseId, roles: result.roles } }
    : { identity: { accountId: result.accountId, roles: result.roles } };
}

/** Customers' identity-provider JWTs (bearer_token). */
export function bearerTokenVerifier(jwt: JwtVerifier): TokenVerifier {
  return {
    peek(token, nowMs) {
      const cached = jwt.peek(token, nowMs);
      return cached === MISS ? MISS : fromJwt(cached);
    },
    verify: (token, nowMs) => jwt.verify(token, nowMs).then(fromJwt),
  };
}

function fromLicenseToken(result: LicenseTokenVerification): Resolution {
  if (!result.ok) return { denied: { allow: false, reason: result.reason, message: result.message } };
  return { identity: { licenseId: result.licenseId, roles: [] } };
}

/**
 * Licence tokens this service signed (license_token): verified offline and synchronously; the
 * licence named is then decided from its live snapshot, so a suspension still denies.
 */
export function licenseTokenVerifier(verifier: LicenseTokenVerifier): TokenVerifier {
  return {
    peek: (token, nowMs) => fromLicenseToken(verifier.verify(token, nowMs)),
    verify: (token, nowMs) => Promise.resolve(fromLicenseToken(verifier.verify(token, nowMs))),
  };
}

/** Trusted internal callers: a service token with the license_id right. */
export function serviceCallers(authorizer: ServiceTokenAuthorizer): ServiceCallerCheck {
  return (authorization, nowMs) => andThen(authorizer.authorizeLicenseIdCaller(authorization, nowMs), (result) => result.ok);
}
