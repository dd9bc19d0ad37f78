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
import { HeaderValueOption_HeaderAppendAction } from "../gen/envoy/config/core/v3/base_pb.js";
import type { HeaderValueOption } from "../gen/envoy/config/core/v3/base_pb.js";
import { Authorization, CheckRequestSchema } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import type { CheckResponse, OkHttpResponse } from "../gen/envoy/service/auth/v3/external_auth_pb.js";
import type { Status } from "../gen/google/rpc/status_pb.js";
import { isPromise } from "../licensing/sync.js";
import { decodeRequestWith } from "../server/errors.js";
import type { RawUnaryHandler } from "../server/grpc-server.js";
import { bindService, type ServiceBinding } from "../server/rpc.js";
import { createAuthorizer, type AuthzDeps, type ProxiedRequest, type RouteSetting } from "./authorizer.js";
import type { HeaderLookup } from "./credential.js";
import { decodeEnvoyCheckRequest, encodeEnvoyAnswer, encodeEnvoyCheckResponse } from "./ext-authz-codec.js";
import type { EnvoyAuthzInput, EnvoyHeaderValue, EnvoyHttpInput } from "./ext-authz-codec.js";
import type { AllowAnswer, AuthzAnswer, DenyAnswer, HeaderPair } from "./http-mapping.js";

/** The gRPC method path Envoy calls. */
export const EXT_AUTHZ_CHECK_PATH = "/envoy.service.auth.v3.Authorization/Check";

/**
 * The Envoy Authorization service over the licensing Check; never answers with an RPC error.
 *
 * The handler reads only an `EnvoyAuthzInput`, which a full CheckRequest (what the Connect port
 * decodes) is structurally. The gRPC port serves the same Check through
 * createExtAuthzGrpcHandler instead.
 */
export function createAuthorizationBinding(deps: AuthzDeps): ServiceBinding<typeof Authorization> {
  const authorize = createAuthorizer(deps);
  return bindService(Authorization, {
    check(request: EnvoyAuthzInput, context) {
      const answer = authorize(proxiedRequestOf(request), context);
      return isPromise(answer) ? answer.then(toCheckResponse) : toCheckResponse(answer);
    },
  });
}

/**
 * The same Check for the gRPC port (its `rawUnary` map), bytes to bytes: the request read by
 * decodeEnvoyCheckRequest, the answer written straight from the authorizer's answer
 * (encodeEnvoyAnswer) instead of building the CheckResponse message and encoding that, which
 * was a fifth of what an ext_authz call allocated. The bytes are the binding's, exactly.
 */
export function createExtAuthzGrpcHandler(deps: AuthzDeps): RawUnaryHandler {
  const authorize = createAuthorizer(deps);
  return (bytes, context) => {
    const request = decodeRequestWith(CheckRequestSchema.typeName, decodeEnvoyCheckRequest, bytes);
    const answer = authorize(proxiedRequestOf(request), context);
    return isPromise(answer) ? answer.then(answerBytes) : answerBytes(answer);
  };
}

function answerBytes(answer: AuthzAnswer): Uint8Array {
  return encodeEnvoyAnswer(answer) ?? encodeEnvoyCheckResponse(toCheckResponse(answer));
}

/** The proxied request inside an Envoy CheckRequest; a request without HTTP attributes has no headers. */
export function proxiedRequestOf(request: EnvoyAuthzInput): ProxiedRequest {
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

function headerLookupOf(http: EnvoyHttpInput | undefined): HeaderLookup {
  if (http === undefined) return () => undefined;
  const headerMap = http.headerMap;
  // encode_raw_headers sends header_map (repeated, raw bytes) instead of the merged map.
  if (headerMap !== undefined && headerMap.headers.length > 0) return (name) => fromHeaderMap(headerMap, name);
  // The decoder's lookup reads its header ranges without building the map.
  if (http.lookupHeader !== undefined) return http.lookupHeader;
  const headers = http.headers;
  return (name) => ownValue(headers, name);
}

/** A map entry without reaching into the prototype (`constructor` is not a header). */
function ownValue(map: { readonly [key: string]: string }, key: string): string | undefined {
  return Object.hasOwn(map, key) ? map[key] : undefined;
}

/** Values of `name` joined with "," as HTTP merges them; raw bytes decoded as UTF-8. */
function fromHeaderMap(map: { readonly headers: readonly EnvoyHeaderValue[] }, name: string): string | undefined {
  let joined: string | undefined;
  for (const entry of map.headers) {
    if (entry.key.toLowerCase() !== name) continue;
    const value = entry.rawValue.length > 0 ? Buffer.from(entry.rawValue).toString("utf8") : entry.value;
    joined = joined === undefined ? value : `${joined},${value}`;
  }
  return joined;
}

/**
 * The Envoy CheckResponse for an answer. Built as plain literals holding what create() would set
 * (test/unit/ext-authz-codec.test.ts compares them), without its reflection: this runs on every
 * ext_authz call.
 */
export function toCheckResponse(answer: AuthzAnswer): CheckResponse {
  return answer.allow ? okResponse(answer) : deniedResponse(answer);
}

const OVERWRITE = HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD;
/** The raw_value of every header we set; zero-length, so sharing it cannot leak data. */
const NO_BYTES = new Uint8Array(0);

function headerOptions(pairs: readonly HeaderPair[]): HeaderValueOption[] {
  return pairs.map((pair) => ({
    $typeName: "envoy.config.core.v3.HeaderValueOption",
    header: { $typeName: "envoy.config.core.v3.HeaderValue", key: pair.name, value: pair.value, rawValue: NO_BYTES },
    appendAction: OVERWRITE,
    keepEmptyValue: false,
  }));
}

function rpcStatus(code: number, message: string): Status {
  return { $typeName: "google.rpc.Status", code, message, details: [] };
}

function okResponse(answer: AllowAnswer): CheckResponse {
  const headersToRemove = [...answer.clearedUpstreamHeaders];
  if (answer.credentialHeader !== undefined) headersToRemove.push(answer.credentialHeader);
  const ok: OkHttpResponse = {
    $typeName: "envoy.service.auth.v3.OkHttpResponse",
    headers: headerOptions(answer.upstreamHeaders),
    headersToRemove,
    responseHeadersToAdd: headerOptions(answer.responseHeaders),
    queryParametersToSet: [],
    queryParametersToRemove: [],
  };
  return {
    $typeName: "envoy.service.auth.v3.CheckResponse",
    status: rpcStatus(0, ""),
    httpResponse: { case: "okResponse", value: ok },
    dynamicMetadata: { license_id: answer.licenseId, plan: answer.plan, decision_id: answer.decisionId },
  };
}

function deniedResponse(answer: DenyAnswer): CheckResponse {
  return {
    $typeName: "envoy.service.auth.v3.CheckResponse",
    status: rpcStatus(answer.grpcCode, `${answer.reason}: ${answer.message}`),
    httpResponse: {
      case: "deniedResponse",
      value: {
        $typeName: "envoy.service.auth.v3.DeniedHttpResponse",
        status: { $typeName: "envoy.type.v3.HttpStatus", code: answer.status },
        headers: headerOptions(answer.headers),
        body: answer.body,
      },
    },
  };
}
