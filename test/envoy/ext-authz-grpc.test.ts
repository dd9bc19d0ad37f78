/**
 * Envoy ext_authz over a real gRPC port: Envoy-shaped CheckRequests, encoded with our copy of
 * Envoy's protos, sent by a raw grpc-js client to /envoy.service.auth.v3.Authorization/Check.
 */
import type * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { HeaderValueOption_HeaderAppendAction } from "../../src/gen/envoy/config/core/v3/base_pb.js";
import type { HeaderValueOption } from "../../src/gen/envoy/config/core/v3/base_pb.js";
import {
  CheckRequestSchema as EnvoyCheckRequestSchema,
  CheckResponseSchema as EnvoyCheckResponseSchema,
  file_envoy_service_auth_v3_external_auth,
} from "../../src/gen/envoy/service/auth/v3/external_auth_pb.js";
import type { CheckResponse as EnvoyCheckResponse } from "../../src/gen/envoy/service/auth/v3/external_auth_pb.js";
import type { CheckRequest } from "../../src/gen/licensing/v1/licensing_pb.js";
import type { AuthzDeps } from "../../src/envoy/authorizer.js";
import { createAuthorizationBinding, createExtAuthzGrpcHandler, EXT_AUTHZ_CHECK_PATH } from "../../src/envoy/ext-authz.js";
import { createGrpcServer, type GrpcServer } from "../../src/server/grpc-server.js";
import { createHealthRegistry } from "../../src/server/health.js";
import { rawClient, rawUnary, recordingLogger as serverLogger, typedUnary } from "../server/support.js";
import { envoyRequest, GOOD_KEY, NOW_MS, recordingLogger, ROUTES, scriptedCheck, UNKNOWN_KEY, type EnvoyRequestInit } from "./support.js";

// As app.ts mounts it (the raw handler, bytes to bytes), and as the binding through protobuf-es.
describe.each([["raw handler", true], ["binding", false]])("Envoy ext_authz on the gRPC port (%s)", (_name, raw) => {
  const calls: CheckRequest[] = [];
  let server: GrpcServer;
  let client: grpc.Client;

  beforeAll(async () => {
    const deps: AuthzDeps = {
      check: scriptedCheck(calls),
      routes: ROUTES,
      logger: recordingLogger(),
      now: () => NOW_MS,
      options: { removeCredentialHeader: true },
    };
    server = createGrpcServer({
      bindings: [createAuthorizationBinding(deps)],
      health: createHealthRegistry("SERVING"),
      reflectionFiles: [file_envoy_service_auth_v3_external_auth],
      logger: serverLogger(),
      ...(raw ? { rawUnary: new Map([[EXT_AUTHZ_CHECK_PATH, createExtAuthzGrpcHandler(deps)]]) } : {}),
    });
    client = rawClient(await server.listen("127.0.0.1", 0));
  });

  afterAll(async () => {
    client.close();
    await server.shutdown(5_000);
  });

  async function check(init: EnvoyRequestInit): Promise<EnvoyCheckResponse> {
    const result = await typedUnary(client, EXT_AUTHZ_CHECK_PATH, EnvoyCheckRequestSchema, EnvoyCheckResponseSchema, envoyRequest(init));
    if (!result.ok) throw new Error(`RPC failed: ${result.error.code} ${result.error.details}`);
    return result.response;
  }

  const headers = (options: readonly HeaderValueOption[]): Record<string, string> =>
    Object.fromEntries(options.map((o) => [o.header?.key ?? "", o.header?.value ?? ""]));

  function denied(response: EnvoyCheckResponse) {
    if (response.httpResponse.case !== "deniedResponse") throw new Error(`expected a denied_response, got ${response.httpResponse.case}`);
    const value = response.httpResponse.value;
    return { code: response.status?.code, http: value.status?.code, headers: headers(value.headers), body: JSON.parse(value.body) as unknown };
  }

  it("an allowed request answers status OK with upstream headers, removals, RateLimit and metadata", async () => {
    const response = await check({ headers: { authorization: `Bearer ${GOOD_KEY}` }, contextExtensions: { feature: "reports.export" } });
    expect(response.status?.code).toBe(0);
    if (response.httpResponse.case !== "okResponse") throw new Error("expected ok_response");
    const ok = response.httpResponse.value;
    expect(headers(ok.headers)).toMatchObject({ "x-license-id": "lic_1", "x-license-plan": "pro", "x-decision-id": "dec-1" });
    expect(ok.headers.every((o) => o.appendAction === HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD)).toBe(true);
    expect(ok.headersToRemove).toEqual(["authorization"]);
    expect(headers(ok.responseHeadersToAdd)).toEqual({ "ratelimit-policy": '"reports.export";q=100', ratelimit: '"reports.export";r=99;t=3600' });
    expect(response.dynamicMetadata).toEqual({ license_id: "lic_1", plan: "pro", decision_id: "dec-1" });
  });

  it("a missing credential is a 401 deny in a successful RPC", async () => {
    const deny = denied(await check({ contextExtensions: { feature: "reports.export" } }));
    expect(deny).toMatchObject({ code: 16, http: 401, body: { reason: "UNKNOWN_CREDENTIAL" } });
    expect(deny.headers["www-authenticate"]).toBe('Bearer realm="licensing"');
  });

  it("an unknown API key answers 401 with error=invalid_token", async () => {
    const deny = denied(await check({ headers: { "x-api-key": UNKNOWN_KEY }, contextExtensions: { feature: "reports.export" } }));
    expect(deny).toMatchObject({ code: 16, http: 401, body: { reason: "UNKNOWN_CREDENTIAL" } });
    expect(deny.headers["www-authenticate"]).toBe('Bearer realm="licensing", error="invalid_token"');
  });

  it("an unentitled feature answers 403 PERMISSION_DENIED", async () => {
    const deny = denied(await check({ headers: { "x-api-key": GOOD_KEY }, contextExtensions: { feature: "premium" } }));
    expect(deny).toEqual({
      code: 7,
      http: 403,
      headers: { "content-type": "application/json" },
      body: { reason: "FEATURE_NOT_ENTITLED", message: "the plan does not include premium", decision_id: "dec-premium" },
    });
  });

  it("an exhausted quota answers 429 RESOURCE_EXHAUSTED with Retry-After and RateLimit", async () => {
    const deny = denied(await check({ headers: { "x-api-key": GOOD_KEY }, contextExtensions: { feature: "quota" } }));
    expect(deny).toMatchObject({ code: 8, http: 429, body: { reason: "QUOTA_EXHAUSTED" } });
    expect(deny.headers).toMatchObject({ "retry-after": "3", "ratelimit-policy": '"quota";q=100', ratelimit: '"quota";r=0;t=3600' });
  });

  it("a check that throws answers a 503 deny, not an RPC error", async () => {
    const deny = denied(await check({ headers: { "x-api-key": GOOD_KEY }, contextExtensions: { feature: "throws" } }));
    expect(deny).toMatchObject({ code: 14, http: 503, body: { reason: "BACKEND_UNAVAILABLE" } });
  });

  it("environment from context_extensions and cost > 1 reach the check", async () => {
    calls.length = 0;
    await check({ headers: { "x-api-key": GOOD_KEY }, contextExtensions: { feature: "prod-only", environment: "production", cost: "4" } });
    expect(calls[0]).toMatchObject({ feature: "prod-only", environment: "production", quantity: 4n });
  });

  it("a request without context extensions is priced by the route table", async () => {
    calls.length = 0;
    await check({ method: "POST", path: "/v1/jobs?dry=1", headers: { "x-api-key": GOOD_KEY } });
    expect(calls[0]).toMatchObject({ feature: "jobs.create", quantity: 5n });
  });

  it("undecodable bytes answer INVALID_ARGUMENT (the only RPC error: the request is not a CheckRequest)", async () => {
    const result = await rawUnary(client, EXT_AUTHZ_CHECK_PATH, new Uint8Array([0x0a, 0xff]));
    expect(result.ok).toBe(false);
    if (!result.ok) expect(result.error.code).toBe(3);
  });
});
