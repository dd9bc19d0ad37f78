/**
 * Shared pieces of the access-proxy tests: a scripted licensing Check (answers by feature and
 * credential, records what it was asked), a recording logger, and Envoy-shaped CheckRequests.
 */
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import { CheckRequestSchema as EnvoyCheckRequestSchema } from "../../src/gen/envoy/service/auth/v3/external_auth_pb.js";
import type { CheckRequest as EnvoyCheckRequest } from "../../src/gen/envoy/service/auth/v3/external_auth_pb.js";
import { CheckResponseSchema, Decision, Reason } from "../../src/gen/licensing/v1/licensing_pb.js";
import type { CheckRequest, CheckResponse } from "../../src/gen/licensing/v1/licensing_pb.js";
import type { AuthzLogger, CheckFn } from "../../src/envoy/authorizer.js";
import type { RouteTable } from "../../src/envoy/route-table.js";
import { invalidArgument } from "../../src/server/errors.js";

/** The fixed clock of every test: 2023-11-14T22:13:20Z. */
export const NOW_MS = 1_700_000_000_000;
const NOW_S = BigInt(NOW_MS / 1000);

export const GOOD_KEY = "lk_live_good";
export const UNKNOWN_KEY = "lk_live_unknown";
export const REVOKED_KEY = "lk_live_revoked";

/**
 * Route rules of the tests: /v1/reports/export is priced 3 and "/v1/reports" 1, so the longest
 * prefix must win; POST /v1/jobs is a different feature from GET /v1/jobs.
 */
export const ROUTES: RouteTable = [
  { pathPrefix: "/v1/reports", feature: "reports.view", cost: 1 },
  { pathPrefix: "/v1/reports/export", feature: "reports.export", cost: 3 },
  { pathPrefix: "/v1/jobs", feature: "jobs.read", cost: 1 },
  { method: "POST", pathPrefix: "/v1/jobs", feature: "jobs.create", cost: 5 },
  { pathPrefix: "/v1/premium", feature: "premium", cost: 1 },
  { pathPrefix: "/v1/quota", feature: "quota", cost: 1 },
];

type ResponseInit = MessageInitShape<typeof CheckResponseSchema>;

function response(init: ResponseInit): CheckResponse {
  return create(CheckResponseSchema, { decisionId: "dec-1", policyVersion: 7n, ...init });
}

function allowed(request: CheckRequest, init: ResponseInit = {}): CheckResponse {
  return response({
    decision: Decision.ALLOW,
    reason: Reason.OK,
    message: `${request.feature} allowed`,
    licenseId: "lic_1",
    plan: "pro",
    accountId: "acc_1",
    ...init,
  });
}

function denied(reason: Reason, message: string, init: ResponseInit = {}): CheckResponse {
  return response({ decision: Decision.DENY, reason, message, ...init });
}

/**
 * The scripted Check. Credentials: UNKNOWN_KEY → UNKNOWN_CREDENTIAL, REVOKED_KEY →
 * CREDENTIAL_REVOKED, a bearer/licence token "expired.jwt" → TOKEN_EXPIRED. Features:
 * "quota" → QUOTA_EXHAUSTED (retry 2.5 s, limit 100, remaining 0, resets in 1 h), "rate" →
 * RATE_LIMITED (retry 0.2 s), "seats" → SEATS_EXHAUSTED without any time, "premium" →
 * FEATURE_NOT_ENTITLED, "suspended" → LICENSE_SUSPENDED, "backend" → BACKEND_UNAVAILABLE,
 * "boolean" → allowed without limit, "async" → allowed through a Promise, "throws" → a plain
 * Error, "rejects" → a rejected Promise, "seat-needs-instance" → INVALID_ARGUMENT instance_id,
 * "unavailable" → ConnectError UNAVAILABLE, "prod-only" → ENVIRONMENT_NOT_ALLOWED unless the
 * environment is "production"; anything else → allowed with limit 100, remaining 100 - quantity
 * and a reset in one hour.
 */
export function scriptedCheck(calls: CheckRequest[] = []): CheckFn {
  return (request) => {
    calls.push(request);
    const credential = request.credential;
    if (credential.value === UNKNOWN_KEY) return denied(Reason.UNKNOWN_CREDENTIAL, "unknown API key");
    if (credential.value === REVOKED_KEY) return denied(Reason.CREDENTIAL_REVOKED, "the API key was revoked");
    if (credential.value === "expired.jwt") return denied(Reason.TOKEN_EXPIRED, "the token has expired");
    const resetsAt = { seconds: NOW_S + 3600n };
    switch (request.feature) {
      case "quota":
        return denied(Reason.QUOTA_EXHAUSTED, "monthly quota used up", {
          licenseId: "lic_1",
          decisionId: "dec-quota",
          limit: 100n,
          remaining: 0n,
          resetsAt,
          retryAfter: { seconds: 2n, nanos: 500_000_000 },
        });
      case "rate":
        return denied(Reason.RATE_LIMITED, "too fast", { limit: 10n, remaining: 0n, retryAfter: { nanos: 200_000_000 } });
      case "seats":
        return denied(Reason.SEATS_EXHAUSTED, "all seats taken");
      case "premium":
        return denied(Reason.FEATURE_NOT_ENTITLED, "the plan does not include premium", { licenseId: "lic_1", decisionId: "dec-premium" });
      case "suspended":
        return denied(Reason.LICENSE_SUSPENDED, "the licence is suspended");
      case "backend":
        return denied(Reason.BACKEND_UNAVAILABLE, "cannot decide now", { retryAfter: { seconds: 5n } });
      case "boolean":
        return allowed(request);
      case "async":
        return Promise.resolve(allowed(request));
      case "throws":
        throw new Error("connect ECONNREFUSED password=hunter2");
      case "rejects":
        return Promise.reject(new Error("boom"));
      case "seat-needs-instance":
        throw invalidArgument("instance_id", `is required: feature "${request.feature}" is licensed by seats`);
      case "unavailable":
        throw new ConnectError("store is away", Code.Unavailable);
      case "prod-only":
        return request.environment === "production"
          ? allowed(request)
          : denied(Reason.ENVIRONMENT_NOT_ALLOWED, `not licensed in "${request.environment}"`);
      default: {
        const quantity = request.quantity ?? 1n;
        return allowed(request, { limit: 100n, remaining: 100n - quantity, resetsAt });
      }
    }
  };
}

export interface RecordingLogger extends AuthzLogger {
  readonly entries: { level: "debug" | "warn" | "error"; obj: object; msg: string }[];
}

export function recordingLogger(): RecordingLogger {
  const entries: RecordingLogger["entries"] = [];
  return {
    entries,
    debug: (obj, msg) => void entries.push({ level: "debug", obj, msg }),
    warn: (obj, msg) => void entries.push({ level: "warn", obj, msg }),
    error: (obj, msg) => void entries.push({ level: "error", obj, msg }),
  };
}

export interface EnvoyRequestInit {
  readonly method?: string;
  /** Path and query. */
  readonly path?: string;
  /** Extra request headers (lower-case names). */
  readonly headers?: Record<string, string>;
  readonly contextExtensions?: Record<string, string>;
}

/** A CheckRequest as Envoy's ext_authz filter sends it (headers include the pseudo-headers). */
export function envoyRequest(init: EnvoyRequestInit = {}): EnvoyCheckRequest {
  const method = init.method ?? "GET";
  const path = init.path ?? "/v1/reports/export?format=csv";
  return create(EnvoyCheckRequestSchema, {
    attributes: {
      source: { address: { address: { case: "socketAddress", value: { address: "10.0.0.7", portSpecifier: { case: "portValue", value: 51234 } } } } },
      destination: { address: { address: { case: "socketAddress", value: { address: "10.0.0.1", portSpecifier: { case: "portValue", value: 8080 } } } } },
      request: {
        time: { seconds: NOW_S },
        http: {
          id: "8c6d3f1e-req",
          method,
          path,
          host: "api.example.com",
          scheme: "https",
          protocol: "HTTP/1.1",
          size: -1n,
          headers: {
            ":authority": "api.example.com",
            ":method": method,
            ":path": path,
            ":scheme": "https",
            "user-agent": "curl/8.5.0",
            "x-request-id": "8c6d3f1e-req",
            "x-forwarded-proto": "https",
            ...init.headers,
          },
        },
      },
      contextExtensions: init.contextExtensions ?? {},
    },
  });
}

/** A compact JWS-shaped token (unsigned) whose payload has `iss`. */
export function jwtWithIssuer(iss: string): string {
  const part = (value: object): string => Buffer.from(JSON.stringify(value)).toString("base64url");
  return `${part({ alg: "EdDSA", typ: "JWT", kid: "k1" })}.${part({ iss, sub: "lic_1", exp: 1_900_000_000 })}.c2lnbmF0dXJl`;
}
