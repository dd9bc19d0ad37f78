/**
 * Forward-auth over a real HTTP port, called the way nginx auth_request, Traefik ForwardAuth and
 * Envoy's HTTP ext_authz mode call it.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { CheckRequest } from "../../src/gen/licensing/v1/licensing_pb.js";
import { createForwardAuthRoute } from "../../src/envoy/forward-auth.js";
import { createHttpServer, type HttpServer } from "../../src/server/http-server.js";
import { recordingLogger as serverLogger } from "../server/support.js";
import { GOOD_KEY, NOW_MS, recordingLogger, ROUTES, scriptedCheck } from "./support.js";

describe("HTTP forward-auth", () => {
  const calls: CheckRequest[] = [];
  let server: HttpServer;
  let base: string;

  beforeAll(async () => {
    const route = createForwardAuthRoute({
      check: scriptedCheck(calls),
      routes: ROUTES,
      logger: recordingLogger(),
      now: () => NOW_MS,
      options: { removeCredentialHeader: true },
    });
    server = createHttpServer({ bindings: [], routes: [route], logger: serverLogger() });
    base = `http://127.0.0.1:${await server.listen("127.0.0.1", 0)}`;
  });

  afterAll(async () => {
    await server.close(1_000);
  });

  const nginxStyle = (uri: string, extra: Record<string, string> = {}): Record<string, string> => ({
    "x-api-key": GOOD_KEY,
    "x-original-uri": uri,
    "x-original-method": "GET",
    ...extra,
  });

  it("an allowed request answers exactly 200 with the upstream headers and RateLimit fields", async () => {
    const res = await fetch(`${base}/authz`, { headers: nginxStyle("/v1/reports/export?format=csv") });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("");
    expect(Object.fromEntries(["x-license-id", "x-license-plan", "x-account-id", "x-decision-id", "x-license-remaining"].map((h) => [h, res.headers.get(h)]))).toEqual({
      "x-license-id": "lic_1",
      "x-license-plan": "pro",
      "x-account-id": "acc_1",
      "x-decision-id": "dec-1",
      "x-license-remaining": "97",
    });
    expect(res.headers.get("ratelimit-policy")).toBe('"reports.export";q=100');
    expect(res.headers.get("ratelimit")).toBe('"reports.export";r=97;t=3600');
    expect(res.headers.get("x-envoy-auth-headers-to-remove")).toBe("x-api-key");
  });

  it("Traefik's X-Forwarded-Uri and -Method name the original request", async () => {
    calls.length = 0;
    const res = await fetch(`${base}/authz`, {
      headers: { authorization: `Bearer ${GOOD_KEY}`, "x-forwarded-uri": "/v1/jobs/1", "x-forwarded-method": "POST", "x-forwarded-host": "api.example.com" },
    });
    expect(res.status).toBe(200);
    expect(calls[0]).toMatchObject({ feature: "jobs.create", quantity: 5n });
  });

  it("Envoy's HTTP mode: the original method and the path after /authz", async () => {
    calls.length = 0;
    const res = await fetch(`${base}/authz/v1/jobs/9?x=1`, { method: "POST", headers: { "x-api-key": GOOD_KEY } });
    expect(res.status).toBe(200);
    expect(calls[0]).toMatchObject({ feature: "jobs.create" });
  });

  it("X-License-Feature, -Cost and -Environment set by the proxy win over the route table", async () => {
    calls.length = 0;
    const res = await fetch(`${base}/authz`, {
      headers: nginxStyle("/v1/reports/export", { "x-license-feature": "prod-only", "x-license-cost": "7", "x-license-environment": "production" }),
    });
    expect(res.status).toBe(200);
    expect(calls[0]).toMatchObject({ feature: "prod-only", quantity: 7n, environment: "production" });
  });

  it("a missing credential answers 401 with WWW-Authenticate and the JSON body", async () => {
    const res = await fetch(`${base}/authz`, { headers: { "x-original-uri": "/v1/reports" } });
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="licensing"');
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.json()).toMatchObject({ reason: "UNKNOWN_CREDENTIAL", decision_id: "" });
  });

  it("an unentitled feature answers 403 with reason, message and decision id", async () => {
    const res = await fetch(`${base}/authz`, { headers: nginxStyle("/v1/premium/x") });
    expect(res.status).toBe(403);
    expect(res.headers.get("x-license-status")).toBe("403");
    expect(await res.json()).toEqual({ reason: "FEATURE_NOT_ENTITLED", message: "the plan does not include premium", decision_id: "dec-premium" });
  });

  it("an exhausted quota answers 429 with Retry-After and RateLimit fields", async () => {
    const res = await fetch(`${base}/authz`, { headers: nginxStyle("/v1/quota") });
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBe("3");
    expect(res.headers.get("ratelimit")).toBe('"quota";r=0;t=3600');
    expect(res.headers.get("x-license-reason")).toBe("QUOTA_EXHAUSTED");
    expect(await res.json()).toMatchObject({ reason: "QUOTA_EXHAUSTED" });
  });

  it("a check that cannot decide answers 503 with Retry-After", async () => {
    const res = await fetch(`${base}/authz`, { headers: nginxStyle("/x", { "x-license-feature": "rejects" }) });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("1");
  });

  it("nginx compat: a 429 is answered 403 carrying the true status, Retry-After and the body in headers", async () => {
    const res = await fetch(`${base}/authz`, { headers: nginxStyle("/v1/quota", { "x-license-compat": "nginx" }) });
    expect(res.status).toBe(403);
    expect(res.headers.get("x-license-status")).toBe("429");
    expect(res.headers.get("retry-after")).toBe("3");
    expect(JSON.parse(res.headers.get("x-license-body") ?? "")).toEqual(await res.json());
  });

  it("nginx compat keeps 401, which nginx understands", async () => {
    const res = await fetch(`${base}/authz`, { headers: { "x-original-uri": "/v1/reports", "x-license-compat": "nginx" } });
    expect(res.status).toBe(401);
  });

  it("nginx compat escapes non-ASCII in the body header", async () => {
    const res = await fetch(`${base}/authz`, {
      headers: nginxStyle("/x", { "x-license-feature": "prod-only", "x-environment": "st\u00e4ging", "x-license-compat": "nginx" }),
    });
    const header = res.headers.get("x-license-body") ?? "";
    expect(header).toMatch(/^[\x20-\x7e]+$/);
    expect(JSON.parse(header)).toMatchObject({ reason: "ENVIRONMENT_NOT_ALLOWED", message: 'not licensed in "st\u00e4ging"' });
  });

  it("paths that only start with /authz are not forward-auth", async () => {
    const res = await fetch(`${base}/authzfoo`, { headers: nginxStyle("/v1/reports") });
    expect(res.status).toBe(404);
  });
});
