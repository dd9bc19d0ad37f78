/**
 * Envoy's external authorization service (`/envoy.service.auth.v3.Authorization/Check`, gRPC
 * mode, transport_api_version V3), mounted on the gRPC port next to LicensingService.
 *
 * Envoy-shaped request in (lower-case headers with :authority, :method, :path, :scheme; the path
 * includes the query string; per-route context_extensions `feature`, `cost`, `environment`,
 * `credential`), the shared authorizer (authorizer.ts), Envoy-shaped answer out:
 * - allowed: status OK, OkHttpResponse with x-license-* headers for the upstream (each
 *   OVERWRITE_IF_EXISTS_OR_ADD: the default would append to a value the client sent), our unset
 *   ones and (when configured) the credential header in headers_to_remove, RateLimit fields in
 *   response_headers_to_add, and dynamic_metadata {license_id, plan, decision_id} for later
 *   filters (namespace envoy.filters.http.ext_authz);
 * - denied: a non-OK google.rpc.Status and a DeniedHttpResponse with the status, headers and
 *   JSON body of http-mapping.ts.
 * A deny is never an RPC error: an RPC error sends Envoy down its failure path (status_on_error).
 */
import { create } from "@bufbuild/protobuf";
import { HeaderValueOption_HeaderAppendAction, HeaderValueOptionSchema } from "../gen/envoy/config/core/v3/base_pb.js";
import type { HeaderMap, HeaderValueOption } from "../gen/envoy/config/core/v3/base_pb.js";
import type { AttributeContext_HttpRequest } from "../gen/envoy/service/auth/v3/attribute_context_pb.js";
import {
  Authorization,
  CheckResponseSchema,
  DeniedHttpResponseSchema,
  OkHttpResponseSchema,
} from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import type { CheckRequest, CheckResponse } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import { StatusSchema } from "../gen/google/rpc/status_pb.js";
import { isPromise } from "../licensing/sync.js";
import { bindService, type ServiceBinding } from "../server/rpc.js";
import { createAuthorizer, type AuthzDeps, type ProxiedRequest, type RouteSetting } from "./authorizer.js";
import type { HeaderLookup } from "./credential.js";
import type { AllowAnswer, AuthzAnswer, DenyAnswer, HeaderPair } from "./http-mapping.js";

/** The gRPC method path Envoy calls. */
export const EXT_AUTHZ_CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check";

/** The Envoy Authorization service over the licensing Check; never answers with an RPC error. */
export function createAuthorizationBinding(deps: AuthzDeps): ServiceBinding<typeof Authorization> {
  const authorize = createAuthorizer(deps);
  return bindService(Authorization, {
    check(request, context) {
      const answer = authorize(proxiedRequestOf(request), context);
      return isPromise(answer) ? answer.then(toCheckResponse) : toCheckResponse(answer);
    },
  });
}

/** The proxied request inside an Envoy CheckRequest; a request without HTTP attributes has no headers. */
export function proxiedRequestOf(request: CheckRequest): ProxiedRequest {
  const attributes = request.attributes;
  const http = attributes?.request?.http;
  const header = headerLookupOf(http);
  const extensions = attributes?.contextExtensions;
  return {
    method: (http?.method || header(":method") || "GET").toUpperCase(),
    path: http?.path || header(":path") || "/",
    header,
    setting: (name: RouteSetting) => (extensions === undefined ? undefined : ownValue(extensions, name)),
  };
}

function headerLookupOf(http: AttributeContext_HttpRequest | undefined): HeaderLookup {
  if (http === undefined) return () => undefined;
  const headers = http.headers;
  const headerMap = http.headerMap;
  // encode_raw_headers sends header_map (repeated, raw bytes) instead of the merged map.
  if (headerMap !== undefined && headerMap.headers.length > 0) return (name) => fromHeaderMap(headerMap, name);
  return (name) => ownValue(headers, name);
}

/** A map entry without reaching into the prototype (`constructor` is not a header). */
function ownValue(map: { readonly [key: string]: string }, key: string): string | undefined {
  return Object.hasOwn(map, key) ? map[key] : undefined;
}

/** Values of `name` joined with "," as HTTP merges them; raw bytes decoded as UTF-8. */
function fromHeaderMap(map: HeaderMap, name: string): string | undefined {
  let joined: string | undefined;
  for (const entry of map.headers) {
    if (entry.key.toLowerCase() !== name) continue;
    const value = entry.rawValue.length > 0 ? Buffer.from(entry.rawValue).toString("utf8") : entry.value;
    joined = joined === undefined ? value : `${joined},${value}`;
  }
  return joined;
}

/** The Envoy CheckResponse for an answer. */
export function toCheckResponse(answer: AuthzAnswer): CheckResponse {
  return answer.allow ? okResponse(answer) : deniedResponse(answer);
}

const OVERWRITE = HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD;

function headerOptions(pairs: readonly HeaderPair[]): HeaderValueOption[] {
  return pairs.map((pair) => create(HeaderValueOptionSchema, { header: { key: pair.name, value: pair.value }, appendAction: OVERWRITE }));
}

function okResponse(answer: AllowAnswer): CheckResponse {
  const headersToRemove = [...answer.clearedUpstreamHeaders];
  if (answer.credentialHeader !== undefined) headersToRemove.push(answer.credentialHeader);
  const ok = create(OkHttpResponseSchema, {
    headers: headerOptions(answer.upstreamHeaders),
    headersToRemove,
    responseHeadersToAdd: headerOptions(answer.responseHeaders),
  });
  return create(CheckResponseSchema, {
    status: create(StatusSchema, { code: 0 }),
    httpResponse: { case: "okResponse", value: ok },
    dynamicMetadata: { license_id: answer.licenseId, plan: answer.plan, decision_id: answer.decisionId },
  });
}

function deniedResponse(answer: DenyAnswer): CheckResponse {
  const denied = create(DeniedHttpResponseSchema, {
    status: { code: answer.status },
    headers: headerOptions(answer.headers),
    body: answer.body,
  });
  return create(CheckResponseSchema, {
    status: create(StatusSchema, { code: answer.grpcCode, message: `${answer.reason}: ${answer.message}` }),
    httpResponse: { case: "deniedResponse", value: denied },
  });
}
