import { describe, expect, it } from "vitest";
import { HeaderValueOption_HeaderAppendAction } from "../../src/gen/envoy/config/core/v3/base_pb.js";
import type { HeaderValueOption } from "../../src/gen/envoy/config/core/v3/base_pb.js";
import type { CheckRequest as EnvoyCheckRequest, CheckResponse as EnvoyCheckResponse } from "../../src/gen/envoy/service/auth/v3/external_auth_pb.js";
import type { CheckRequest } from "../../src/gen/licensing/v1/licensing_pb.js";
import type { AuthzOptions } from "../../src/envoy/authorizer.js";
import { createAuthorizationBinding } from "../../src/envoy/ext-authz.js";
import type { RpcContext } from "../../src/server/rpc.js";
import {
  envoyRequest,
  GOOD_KEY,
  jwtWithIssuer,
  NOW_MS,
  recordingLogger,
  REVOKED_KEY,
  ROUTES,
  scriptedCheck,
  UNKNOWN_KEY,
  type EnvoyRequestInit,
} from "./support.js";

const context: RpcContext = { header: () => undefined, signal: new AbortController().signal, transport: "grpc" };

function setup(options: AuthzOptions = { removeCredentialHeader: true }) {
  const calls: CheckRequest[] = [];
  const logger = recordingLogger();
  const binding = createAuthorizationBinding({ check: scriptedCheck(calls), routes: ROUTES, logger, now: () => NOW_MS, options });
  const check = async (init: EnvoyRequestInit): Promise<EnvoyCheckResponse> => binding.handlers.check(envoyRequest(init), context);
  const checkRaw = async (request: EnvoyCheckRequest): Promise<EnvoyCheckResponse> => binding.handlers.check(request, context);
  return { calls, logger, check, checkRaw };
}

const withKey = (extra: EnvoyRequestInit = {}): EnvoyRequestInit => ({
  ...extra,
  headers: { authorization: `Bearer ${GOOD_KEY}`, ...extra.headers },
});

function headerMap(options: readonly HeaderValueOption[]): Record<string, string> {
  return Object.fromEntries(options.map((option) => [option.header?.key ?? "", option.header?.value ?? ""]));
}

function ok(response: EnvoyCheckResponse) {
  expect(response.status?.code).toBe(0);
  if (response.httpResponse.case !== "okResponse") throw new Error(`expected an ok_response, got ${response.httpResponse.case}`);
  return response.httpResponse.value;
}

function denied(response: EnvoyCheckResponse) {
  if (response.httpResponse.case !== "deniedResponse") throw new Error(`expected a denied_response, got ${response.httpResponse.case}`);
  const value = response.httpResponse.value;
  return { grpcCode: response.status?.code, http: value.status?.code, headers: headerMap(value.headers), body: JSON.parse(value.body) as Record<string, string> };
}

describe("Envoy ext_authz mapping", () => {
  it("an allowed request gets the licence headers for the upstream, each OVERWRITE_IF_EXISTS_OR_ADD", async () => {
    const { check } = setup();
    const value = ok(await check(withKey({ contextExtensions: { feature: "reports.export" } })));
    expect(headerMap(value.headers)).toEqual({
      "x-license-id": "lic_1",
      "x-license-plan": "pro",
      "x-account-id": "acc_1",
      "x-decision-id": "dec-1",
      "x-license-remaining": "99",
    });
    for (const option of [...value.headers, ...value.responseHeadersToAdd]) {
      expect(option.appendAction).toBe(HeaderValueOption_HeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD);
    }
  });

  it("an allowed request's credential header is removed from the upstream request when configured", async () => {
    const { check } = setup({ removeCredentialHeader: true });
    expect(ok(await check(withKey({ contextExtensions: { feature: "reports.export" } }))).headersToRemove).toEqual(["authorization"]);
    const apiKey = ok(await check({ headers: { "x-api-key": GOOD_KEY }, contextExtensions: { feature: "reports.export" } }));
    expect(apiKey.headersToRemove).toEqual(["x-api-key"]);
  });

  it("the credential header stays when removal is not configured", async () => {
    const { check } = setup({ removeCredentialHeader: false });
    expect(ok(await check(withKey({ contextExtensions: { feature: "reports.export" } }))).headersToRemove).toEqual([]);
  });

  it("licence headers without a value are removed upstream, so a client cannot supply its own", async () => {
    const { check } = setup({ removeCredentialHeader: false });
    const value = ok(await check(withKey({ contextExtensions: { feature: "boolean" }, headers: { "x-license-remaining": "999999" } })));
    expect(headerMap(value.headers)["x-license-remaining"]).toBeUndefined();
    expect(value.headersToRemove).toEqual(["x-license-remaining"]);
  });

  it("an allowed request carries RateLimit and RateLimit-Policy response headers", async () => {
    const { check } = setup();
    const value = ok(await check(withKey({ contextExtensions: { feature: "reports.export" } })));
    expect(headerMap(value.responseHeadersToAdd)).toEqual({
      "ratelimit-policy": '"reports.export";q=100',
      ratelimit: '"reports.export";r=99;t=3600',
    });
  });

  it("a feature without a limit gets no RateLimit headers", async () => {
    const { check } = setup();
    expect(ok(await check(withKey({ contextExtensions: { feature: "boolean" } }))).responseHeadersToAdd).toEqual([]);
  });

  it("an allowed request emits dynamic metadata with licence, plan and decision id", async () => {
    const { check } = setup();
    const response = await check(withKey({ contextExtensions: { feature: "reports.export" } }));
    expect(response.dynamicMetadata).toEqual({ license_id: "lic_1", plan: "pro", decision_id: "dec-1" });
  });

  it("a missing credential is a 401 deny with a challenge, not an RPC error, and the check is not asked", async () => {
    const { check, calls } = setup();
    const deny = denied(await check({ contextExtensions: { feature: "reports.export" } }));
    expect(deny).toMatchObject({ grpcCode: 16, http: 401, body: { reason: "UNKNOWN_CREDENTIAL", decision_id: "" } });
    expect(deny.headers["www-authenticate"]).toBe('Bearer realm="licensing"');
    expect(deny.headers["content-type"]).toBe("application/json");
    expect(calls).toHaveLength(0);
  });

  it("a non-Bearer Authorization scheme counts as no credential", async () => {
    const { check } = setup();
    expect(denied(await check({ headers: { authorization: "Basic dXNlcjpwYXNz" }, contextExtensions: { feature: "x" } })).http).toBe(401);
  });

  it.each([
    [UNKNOWN_KEY, "UNKNOWN_CREDENTIAL"],
    [REVOKED_KEY, "CREDENTIAL_REVOKED"],
  ])("credential %s answers 401 %s with error=invalid_token", async (key, reason) => {
    const { check } = setup();
    const deny = denied(await check({ headers: { "x-api-key": key }, contextExtensions: { feature: "reports.export" } }));
    expect(deny).toMatchObject({ grpcCode: 16, http: 401, body: { reason } });
    expect(deny.headers["www-authenticate"]).toBe('Bearer realm="licensing", error="invalid_token"');
  });

  it("an expired token answers 401 TOKEN_EXPIRED", async () => {
    const { check } = setup();
    const deny = denied(await check({ headers: { authorization: "Bearer expired.jwt" }, contextExtensions: { feature: "x" } }));
    expect(deny).toMatchObject({ grpcCode: 16, http: 401, body: { reason: "TOKEN_EXPIRED" } });
  });

  it.each([
    ["premium", "FEATURE_NOT_ENTITLED"],
    ["suspended", "LICENSE_SUSPENDED"],
  ])("feature %s answers 403 PERMISSION_DENIED with reason %s", async (feature, reason) => {
    const { check } = setup();
    const deny = denied(await check(withKey({ contextExtensions: { feature } })));
    expect(deny).toMatchObject({ grpcCode: 7, http: 403, body: { reason } });
    expect(deny.headers["www-authenticate"]).toBeUndefined();
    expect(deny.headers["retry-after"]).toBeUndefined();
  });

  it("a deny body carries reason, message and decision id", async () => {
    const { check } = setup();
    expect(denied(await check(withKey({ contextExtensions: { feature: "premium" } }))).body).toEqual({
      reason: "FEATURE_NOT_ENTITLED",
      message: "the plan does not include premium",
      decision_id: "dec-premium",
    });
  });

  it("an exhausted quota answers 429 with Retry-After rounded up and RateLimit headers", async () => {
    const { check } = setup();
    const deny = denied(await check(withKey({ contextExtensions: { feature: "quota" } })));
    expect(deny).toMatchObject({ grpcCode: 8, http: 429, body: { reason: "QUOTA_EXHAUSTED", decision_id: "dec-quota" } });
    expect(deny.headers["retry-after"]).toBe("3");
    expect(deny.headers["ratelimit-policy"]).toBe('"quota";q=100');
    expect(deny.headers["ratelimit"]).toBe('"quota";r=0;t=3600');
  });

  it("a rate limit under a second still says Retry-After: 1", async () => {
    const { check } = setup();
    const deny = denied(await check(withKey({ contextExtensions: { feature: "rate" } })));
    expect(deny).toMatchObject({ grpcCode: 8, http: 429, body: { reason: "RATE_LIMITED" } });
    expect(deny.headers["retry-after"]).toBe("1");
    expect(deny.headers["ratelimit"]).toBe('"rate";r=0;t=1');
  });

  it("exhausted seats answer 429 with a Retry-After even when the decision states no time", async () => {
    const { check } = setup();
    const deny = denied(await check(withKey({ contextExtensions: { feature: "seats" } })));
    expect(deny).toMatchObject({ grpcCode: 8, http: 429, body: { reason: "SEATS_EXHAUSTED" } });
    expect(deny.headers["retry-after"]).toBe("1");
  });

  it("BACKEND_UNAVAILABLE answers 503 UNAVAILABLE with Retry-After", async () => {
    const { check } = setup();
    const deny = denied(await check(withKey({ contextExtensions: { feature: "backend" } })));
    expect(deny).toMatchObject({ grpcCode: 14, http: 503, body: { reason: "BACKEND_UNAVAILABLE" } });
    expect(deny.headers["retry-after"]).toBe("5");
  });

  it.each(["throws", "rejects", "unavailable"])("a check that fails (%s) answers a 503 deny, not an RPC error", async (feature) => {
    const { check, logger } = setup();
    const deny = denied(await check(withKey({ contextExtensions: { feature } })));
    expect(deny).toMatchObject({ grpcCode: 14, http: 503, body: { reason: "BACKEND_UNAVAILABLE", decision_id: "" } });
    expect(deny.headers["retry-after"]).toBe("1");
    expect(JSON.stringify(deny.body)).not.toContain("hunter2");
    if (feature !== "unavailable") expect(logger.entries.map((e) => e.level)).toContain("error");
  });

  it("an INVALID_ARGUMENT from the check answers 400 naming the field", async () => {
    const { check } = setup();
    const deny = denied(await check(withKey({ contextExtensions: { feature: "seat-needs-instance" } })));
    expect(deny).toMatchObject({ grpcCode: 3, http: 400, body: { reason: "INVALID_REQUEST" } });
    expect(deny.body["message"]).toMatch(/^instance_id: is required/);
  });

  it("the environment comes from the context extension, before the X-Environment header", async () => {
    const { check, calls } = setup();
    ok(await check(withKey({ contextExtensions: { feature: "prod-only", environment: "production" }, headers: { "x-environment": "staging" } })));
    expect(calls[0]?.environment).toBe("production");
    const deny = denied(await check(withKey({ contextExtensions: { feature: "prod-only" }, headers: { "x-environment": "staging" } })));
    expect(deny).toMatchObject({ http: 403, body: { reason: "ENVIRONMENT_NOT_ALLOWED" } });
    expect(calls[1]?.environment).toBe("staging");
  });

  it("a cost above 1 is passed to the check as the quantity", async () => {
    const { check, calls } = setup();
    const value = ok(await check(withKey({ contextExtensions: { feature: "reports.export", cost: "25" } })));
    expect(calls[0]?.quantity).toBe(25n);
    expect(headerMap(value.headers)["x-license-remaining"]).toBe("75");
  });

  it("a malformed cost setting answers 500 ROUTE_MISCONFIGURED and asks nothing", async () => {
    const { check, calls, logger } = setup();
    const deny = denied(await check(withKey({ contextExtensions: { feature: "reports.export", cost: "-2" } })));
    expect(deny).toMatchObject({ grpcCode: 13, http: 500, body: { reason: "ROUTE_MISCONFIGURED" } });
    expect(calls).toHaveLength(0);
    expect(logger.entries.map((e) => e.level)).toEqual(["warn"]);
  });

  it("without a feature extension the route table decides, longest prefix first, with its cost", async () => {
    const { check, calls } = setup();
    ok(await check(withKey({ path: "/v1/reports/export/2024?format=csv" })));
    ok(await check(withKey({ path: "/v1/reports/42" })));
    ok(await check(withKey({ method: "POST", path: "/v1/jobs" })));
    ok(await check(withKey({ method: "GET", path: "/v1/jobs/7" })));
    expect(calls.map((c) => [c.feature, c.quantity])).toEqual([
      ["reports.export", 3n],
      ["reports.view", 1n],
      ["jobs.create", 5n],
      ["jobs.read", 1n],
    ]);
  });

  it("the route table matches the normalized path, so dot segments cannot pick a cheaper route", async () => {
    const { check, calls } = setup();
    ok(await check(withKey({ path: "/v1/reports/../jobs/%2e%2e/reports//export" })));
    expect(calls[0]?.feature).toBe("reports.export");
  });

  it("a cost extension overrides the route table's cost", async () => {
    const { check, calls } = setup();
    ok(await check(withKey({ path: "/v1/reports/export", contextExtensions: { cost: "0" } })));
    expect(calls[0]).toMatchObject({ feature: "reports.export", quantity: 0n });
  });

  it("an unmapped route answers 403 NO_ROUTE, logged at debug without the query string", async () => {
    const { check, calls, logger } = setup();
    const deny = denied(await check(withKey({ path: "/v2/unknown?api_key=secret" })));
    expect(deny).toMatchObject({ grpcCode: 7, http: 403, body: { reason: "NO_ROUTE", message: "no licensed feature is mapped to GET /v2/unknown" } });
    expect(calls).toHaveLength(0);
    expect(logger.entries).toEqual([{ level: "debug", obj: { method: "GET", path: "/v2/unknown" }, msg: "no route names a feature" }]);
  });

  it("credential kinds: lk_ bearer is an API key, a licensing-issued JWT a licence token, other JWTs bearer tokens", async () => {
    const { check, calls } = setup();
    const licence = jwtWithIssuer("licensing");
    const idp = jwtWithIssuer("https://idp.example.com/");
    ok(await check({ headers: { authorization: `Bearer ${GOOD_KEY}` }, contextExtensions: { feature: "f" } }));
    ok(await check({ headers: { authorization: `bearer ${licence}` }, contextExtensions: { feature: "f" } }));
    ok(await check({ headers: { authorization: `Bearer ${idp}` }, contextExtensions: { feature: "f" } }));
    ok(await check({ headers: { authorization: `Bearer ${idp}` }, contextExtensions: { feature: "f", credential: "license_token" } }));
    ok(await check({ headers: { "x-api-key": GOOD_KEY }, contextExtensions: { feature: "f" } }));
    expect(calls.map((c) => c.credential.case)).toEqual(["apiKey", "licenseToken", "bearerToken", "licenseToken", "apiKey"]);
  });

  it("Authorization wins over X-Api-Key, and only the header used is removed", async () => {
    const { check, calls } = setup();
    const value = ok(await check({ headers: { authorization: "Bearer lk_live_a", "x-api-key": "lk_live_b" }, contextExtensions: { feature: "f" } }));
    expect(calls[0]?.credential).toEqual({ case: "apiKey", value: "lk_live_a" });
    expect(value.headersToRemove).toEqual(["authorization"]);
  });

  it("the instance comes from X-Instance-Id and no operation id is set (a retried proxied request is a new request)", async () => {
    const { check, calls } = setup();
    ok(await check(withKey({ contextExtensions: { feature: "f" }, headers: { "x-instance-id": "pod-7" } })));
    expect(calls[0]).toMatchObject({ instanceId: "pod-7", operationId: "", dryRun: false });
  });

  it("raw header_map (encode_raw_headers) is read like the headers map", async () => {
    const { checkRaw, calls } = setup();
    const request = envoyRequest({ contextExtensions: { feature: "f" } });
    const http = request.attributes?.request?.http;
    if (http === undefined) throw new Error("no http attributes");
    http.headers = {};
    http.headerMap = {
      $typeName: "envoy.config.core.v3.HeaderMap",
      headers: [
        { $typeName: "envoy.config.core.v3.HeaderValue", key: ":path", value: "", rawValue: new TextEncoder().encode("/x") },
        { $typeName: "envoy.config.core.v3.HeaderValue", key: "authorization", value: "", rawValue: new TextEncoder().encode(`Bearer ${GOOD_KEY}`) },
      ],
    };
    ok(await checkRaw(request));
    expect(calls[0]?.credential).toEqual({ case: "apiKey", value: GOOD_KEY });
  });

  it("an asynchronous check is answered the same way", async () => {
    const { check } = setup();
    expect(headerMap(ok(await check(withKey({ contextExtensions: { feature: "async" } }))).headers)["x-license-id"]).toBe("lic_1");
  });

  it("a synchronous check is answered without a promise", () => {
    const binding = createAuthorizationBinding({ check: scriptedCheck(), logger: recordingLogger(), options: { removeCredentialHeader: false } });
    const result = binding.handlers.check(envoyRequest(withKey({ contextExtensions: { feature: "f" } })), context);
    expect(result instanceof Promise).toBe(false);
  });
});
