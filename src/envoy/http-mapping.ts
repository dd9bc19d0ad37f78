/**
 * The one place where a licensing decision becomes HTTP: status, headers and body, shared by
 * Envoy ext_authz (gRPC) and forward-auth (nginx, Traefik, Envoy's HTTP mode).
 *
 * | decision                                              | HTTP | gRPC status (ext_authz)  |
 * |-------------------------------------------------------|------|--------------------------|
 * | allowed                                               | 200  | OK (0)                   |
 * | no / unknown / invalid / expired / revoked credential | 401  | UNAUTHENTICATED (16)     |
 * | suspended, licence expired or not yet valid, feature  |      |                          |
 * |   not entitled, environment or role not allowed       | 403  | PERMISSION_DENIED (7)    |
 * | no route names a feature for the request              | 403  | PERMISSION_DENIED (7)    |
 * | quota, rate, seats, capacity                          | 429  | RESOURCE_EXHAUSTED (8)   |
 * | malformed request (e.g. a seat feature without        |      |                          |
 * |   X-Instance-Id)                                      | 400  | INVALID_ARGUMENT (3)     |
 * | no decision possible (backend unavailable, the check  |      |                          |
 * |   failed)                                             | 503  | UNAVAILABLE (14)         |
 * | the proxy's route settings are malformed (bad cost)   | 500  | INTERNAL (13)            |
 *
 * Every deny carries the JSON body `{"reason","message","decision_id"}` (decision_id is empty
 * when no decision was made); 401 carries `WWW-Authenticate` (RFC 6750), 429 and 503 carry
 * `Retry-After` in whole seconds rounded up, and 429 and allowed answers carry the RateLimit
 * fields of draft-ietf-httpapi-ratelimit-headers when the decision states a limit.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import { Reason } from "../gen/licensing/v1/licensing_pb.js";
import type { CheckResponse } from "../gen/licensing/v1/licensing_pb.js";
import { Decision } from "../gen/licensing/v1/licensing_pb.js";

export interface HeaderPair {
  /** Lower-case header name. */
  readonly name: string;
  readonly value: string;
}

/** The request may proceed. */
export interface AllowAnswer {
  readonly allow: true;
  /** Headers to set (replacing any the client sent) on the upstream request. */
  readonly upstreamHeaders: readonly HeaderPair[];
  /**
   * Our upstream header names that have no value this time: removed from the upstream request,
   * so a client cannot smuggle its own `x-license-remaining` past the proxy.
   */
  readonly clearedUpstreamHeaders: readonly string[];
  /** The header that carried the credential, when it is to be removed upstream. */
  readonly credentialHeader: string | undefined;
  /** Headers for the client's response (RateLimit, RateLimit-Policy). */
  readonly responseHeaders: readonly HeaderPair[];
  readonly licenseId: string;
  readonly plan: string;
  readonly decisionId: string;
}

/** The request is refused with `status`; nothing goes upstream. */
export interface DenyAnswer {
  readonly allow: false;
  /** HTTP status for the client. */
  readonly status: number;
  /** The non-OK gRPC status code ext_authz answers with. */
  readonly grpcCode: number;
  /** The Reason's name without prefix (`QUOTA_EXHAUSTED`), or NO_ROUTE, INVALID_REQUEST, ROUTE_MISCONFIGURED. */
  readonly reason: string;
  readonly message: string;
  /** Empty when no decision was made. */
  readonly decisionId: string;
  /** Headers for the client: content-type, WWW-Authenticate, Retry-After, RateLimit fields. */
  readonly headers: readonly HeaderPair[];
  /** The JSON body. */
  readonly body: string;
}

export type AuthzAnswer = AllowAnswer | DenyAnswer;

/** The upstream request headers an allowed request gets. */
export const UPSTREAM_HEADERS = {
  licenseId: "x-license-id",
  plan: "x-license-plan",
  accountId: "x-account-id",
  decisionId: "x-decision-id",
  remaining: "x-license-remaining",
} as const;

export const REALM = "licensing";
/** Retry-After when a 429 or 503 states no time of its own. */
const DEFAULT_RETRY_AFTER_SECONDS = 1;

const WWW_AUTHENTICATE_INVALID = `Bearer realm="${REALM}", error="invalid_token"`;
/** RFC 6750 §3.1: a request without credentials gets no error code. */
const WWW_AUTHENTICATE_MISSING = `Bearer realm="${REALM}"`;
const CONTENT_TYPE: HeaderPair = { name: "content-type", value: "application/json" };

interface DenyClass {
  readonly status: number;
  readonly grpcCode: number;
  /** 401s say how to authenticate. */
  readonly challenge: boolean;
  /** 429s and 503s say when to retry. */
  readonly retry: boolean;
}

const UNAUTHENTICATED: DenyClass = { status: 401, grpcCode: Code.Unauthenticated, challenge: true, retry: false };
const FORBIDDEN: DenyClass = { status: 403, grpcCode: Code.PermissionDenied, challenge: false, retry: false };
const EXHAUSTED: DenyClass = { status: 429, grpcCode: Code.ResourceExhausted, challenge: false, retry: true };
const UNAVAILABLE: DenyClass = { status: 503, grpcCode: Code.Unavailable, challenge: false, retry: true };

/** How each deny reason answers; a reason not listed (a newer one) answers 403. */
const DENY_CLASSES: ReadonlyMap<Reason, DenyClass> = new Map([
  [Reason.UNKNOWN_CREDENTIAL, UNAUTHENTICATED],
  [Reason.INVALID_TOKEN, UNAUTHENTICATED],
  [Reason.TOKEN_EXPIRED, UNAUTHENTICATED],
  [Reason.CREDENTIAL_REVOKED, UNAUTHENTICATED],
  [Reason.LICENSE_SUSPENDED, FORBIDDEN],
  [Reason.LICENSE_EXPIRED, FORBIDDEN],
  [Reason.LICENSE_NOT_YET_VALID, FORBIDDEN],
  [Reason.FEATURE_NOT_ENTITLED, FORBIDDEN],
  [Reason.ENVIRONMENT_NOT_ALLOWED, FORBIDDEN],
  [Reason.ROLE_NOT_ALLOWED, FORBIDDEN],
  [Reason.QUOTA_EXHAUSTED, EXHAUSTED],
  [Reason.RATE_LIMITED, EXHAUSTED],
  [Reason.SEATS_EXHAUSTED, EXHAUSTED],
  [Reason.CAPACITY_EXHAUSTED, EXHAUSTED],
  [Reason.BACKEND_UNAVAILABLE, UNAVAILABLE],
]);

/**
 * The answer for a Check decision. `feature` names the RateLimit policy; `credentialHeader` is
 * the header to remove upstream (undefined: keep it); `nowMs` (epoch ms) turns `resets_at` into
 * seconds.
 */
export function answerForDecision(
  response: CheckResponse,
  feature: string,
  credentialHeader: string | undefined,
  nowMs: number,
): AuthzAnswer {
  if (response.decision === Decision.ALLOW) return allowAnswer(response, feature, credentialHeader, nowMs);
  const kind = DENY_CLASSES.get(response.reason) ?? FORBIDDEN;
  const headers: HeaderPair[] = [CONTENT_TYPE];
  if (kind.challenge) headers.push({ name: "www-authenticate", value: WWW_AUTHENTICATE_INVALID });
  if (kind.retry) headers.push({ name: "retry-after", value: String(retryAfterSeconds(response, nowMs)) });
  if (kind === EXHAUSTED) pushRateLimit(headers, response, feature, nowMs);
  return deny(kind, reasonName(response.reason), response.message, response.decisionId, headers);
}

/** No credential in the request: 401 with a challenge, not an RPC error. */
export function missingCredentialAnswer(): DenyAnswer {
  return deny(
    UNAUTHENTICATED,
    "UNKNOWN_CREDENTIAL",
    "a credential is required: Authorization: Bearer <api key or token>, or X-Api-Key",
    "",
    [CONTENT_TYPE, { name: "www-authenticate", value: WWW_AUTHENTICATE_MISSING }],
  );
}

/** Neither the proxy nor the route table names a feature for this request. */
export function noRouteAnswer(method: string, path: string): DenyAnswer {
  return deny(FORBIDDEN, "NO_ROUTE", `no licensed feature is mapped to ${method} ${path}`, "", [CONTENT_TYPE]);
}

/** The proxy's per-route settings are malformed (an operator's mistake, not the client's). */
export function routeMisconfiguredAnswer(message: string): DenyAnswer {
  return deny({ status: 500, grpcCode: Code.Internal, challenge: false, retry: false }, "ROUTE_MISCONFIGURED", message, "", [CONTENT_TYPE]);
}

/**
 * The answer when the check threw instead of deciding: a malformed credential answers 401, any
 * other INVALID_ARGUMENT 400 with its message (written for clients: it names the field), and
 * everything else 503, because no decision exists to enforce (failure_mode_allow stays off).
 */
export function answerForError(err: unknown): DenyAnswer {
  if (err instanceof ConnectError && err.code === Code.InvalidArgument) {
    if (err.rawMessage.startsWith("credential")) {
      return deny(UNAUTHENTICATED, "INVALID_TOKEN", "the credential is malformed", "", [
        CONTENT_TYPE,
        { name: "www-authenticate", value: WWW_AUTHENTICATE_INVALID },
      ]);
    }
    return deny({ status: 400, grpcCode: Code.InvalidArgument, challenge: false, retry: false }, "INVALID_REQUEST", err.rawMessage, "", [CONTENT_TYPE]);
  }
  return deny(UNAVAILABLE, "BACKEND_UNAVAILABLE", "no licensing decision could be made; retry later", "", [
    CONTENT_TYPE,
    { name: "retry-after", value: String(DEFAULT_RETRY_AFTER_SECONDS) },
  ]);
}

function deny(kind: DenyClass, reason: string, message: string, decisionId: string, headers: readonly HeaderPair[]): DenyAnswer {
  return {
    allow: false,
    status: kind.status,
    grpcCode: kind.grpcCode,
    reason,
    message,
    decisionId,
    headers,
    body: JSON.stringify({ reason, message, decision_id: decisionId }),
  };
}

function allowAnswer(response: CheckResponse, feature: string, credentialHeader: string | undefined, nowMs: number): AllowAnswer {
  const upstreamHeaders: HeaderPair[] = [];
  const clearedUpstreamHeaders: string[] = [];
  putUpstream(upstreamHeaders, clearedUpstreamHeaders, UPSTREAM_HEADERS.licenseId, response.licenseId);
  putUpstream(upstreamHeaders, clearedUpstreamHeaders, UPSTREAM_HEADERS.plan, response.plan);
  putUpstream(upstreamHeaders, clearedUpstreamHeaders, UPSTREAM_HEADERS.accountId, response.accountId);
  putUpstream(upstreamHeaders, clearedUpstreamHeaders, UPSTREAM_HEADERS.decisionId, response.decisionId);
  putUpstream(upstreamHeaders, clearedUpstreamHeaders, UPSTREAM_HEADERS.remaining, response.remaining === undefined ? "" : String(response.remaining));
  let responseHeaders: readonly HeaderPair[] = NO_HEADERS;
  if (response.limit !== undefined) {
    const fields: HeaderPair[] = [];
    pushRateLimit(fields, response, feature, nowMs);
    responseHeaders = fields;
  }
  return {
    allow: true,
    upstreamHeaders,
    clearedUpstreamHeaders,
    credentialHeader,
    responseHeaders,
    licenseId: response.licenseId,
    plan: response.plan,
    decisionId: response.decisionId,
  };
}

/** A header with a value goes upstream; one without is cleared, so a client cannot supply it. */
function putUpstream(headers: HeaderPair[], cleared: string[], name: string, value: string): void {
  if (value.length > 0) headers.push({ name, value });
  else cleared.push(name);
}

/** Shared by answers without RateLimit fields (boolean features). */
const NO_HEADERS: readonly HeaderPair[] = Object.freeze([]);

/**
 * RateLimit-Policy `"<feature>";q=<limit>` and RateLimit `"<feature>";r=<remaining>;t=<seconds>`
 * (draft-ietf-httpapi-ratelimit-headers-09: Structured Field lists whose items name the policy).
 * Nothing when the decision states no limit (boolean features).
 */
function pushRateLimit(headers: HeaderPair[], response: CheckResponse, feature: string, nowMs: number): void {
  if (response.limit === undefined) return;
  const policy = policyName(feature);
  headers.push({ name: "ratelimit-policy", value: `${policy};q=${response.limit}` });
  if (response.remaining === undefined) return;
  const remaining = response.remaining < 0n ? 0n : response.remaining;
  const reset = resetSeconds(response, nowMs);
  headers.push({ name: "ratelimit", value: reset === undefined ? `${policy};r=${remaining}` : `${policy};r=${remaining};t=${reset}` });
}

/** The feature as a Structured Field string; "default" if it is not printable ASCII. */
function policyName(feature: string): string {
  if (!/^[\x20-\x7e]+$/.test(feature)) return '"default"';
  return `"${feature.replace(/[\\"]/g, "\\$&")}"`;
}

/** Seconds until the limit resets (resets_at, else retry_after), rounded up; undefined if unknown. */
function resetSeconds(response: CheckResponse, nowMs: number): number | undefined {
  const resetsAt = response.resetsAt;
  if (resetsAt !== undefined) {
    const ms = Number(resetsAt.seconds) * 1000 + Math.floor(resetsAt.nanos / 1e6) - nowMs;
    return ms > 0 ? Math.ceil(ms / 1000) : 0;
  }
  return durationSeconds(response);
}

/** retry_after, else the time to resets_at, else the default; whole seconds rounded up, at least 1. */
function retryAfterSeconds(response: CheckResponse, nowMs: number): number {
  const seconds = durationSeconds(response) ?? resetSeconds(response, nowMs) ?? DEFAULT_RETRY_AFTER_SECONDS;
  return Math.max(1, seconds);
}

function durationSeconds(response: CheckResponse): number | undefined {
  const retry = response.retryAfter;
  if (retry === undefined || (retry.seconds <= 0n && retry.nanos <= 0)) return undefined;
  return Number(retry.seconds) + (retry.nanos > 0 ? 1 : 0);
}

function reasonName(reason: Reason): string {
  return Reason[reason] ?? `REASON_${reason}`;
}
