/**
 * A real nginx (the Debian package) in front of a small upstream, with auth_request to the
 * forward-auth route, configured with the shipped snippets deploy/nginx/licensing-authz.conf and
 * licensing-protect.conf. Runs where nginx is installed; under CI (process.env.CI) a missing
 * nginx fails the test instead of skipping it, because CI installs it.
 */
import { spawnSync } from "node:child_process";
import { copyFileSync, readFileSync, writeFileSync } from "node:fs";
import type * as http from "node:http";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createForwardAuthRoute } from "../../src/envoy/forward-auth.js";
import { createHttpServer, type HttpServer } from "../../src/server/http-server.js";
import { NGINX, NGINX_DIR, SKIP_NGINX, startNginx, startUpstream, tempPaths, type RunningNginx, type Seen } from "../support/nginx.js";
import { recordingLogger as serverLogger } from "../server/support.js";
import { GOOD_KEY, NOW_MS, recordingLogger, ROUTES, scriptedCheck } from "./support.js";

function nginxConf(dir: string, port: number, licensingPort: number, appPort: number): string {
  return `
master_process off;
events { worker_connections 64; }
http {
  ${tempPaths(dir)}
  access_log off;
  upstream licensing_http { server 127.0.0.1:${licensingPort}; }
  upstream app { server 127.0.0.1:${appPort}; }
  server {
    listen 127.0.0.1:${port};
    include ${NGINX_DIR}/licensing-authz.conf;
    location /v1/ {
      auth_request /_licensing;
      include ${NGINX_DIR}/licensing-protect.conf;
      proxy_pass http://app;
    }
    location /named/ {
      auth_request /_licensing/reports.export/10;
      include ${NGINX_DIR}/licensing-protect.conf;
      proxy_pass http://app;
    }
    location /boolean/ {
      auth_request /_licensing/boolean;
      include ${NGINX_DIR}/licensing-protect.conf;
      proxy_pass http://app;
    }
    location /backend/ {
      auth_request /_licensing/backend;
      include ${NGINX_DIR}/licensing-protect.conf;
      proxy_pass http://app;
    }
    location /down/ {
      auth_request /_down;
      include ${NGINX_DIR}/licensing-protect.conf;
      proxy_pass http://app;
    }
    location = /_down {
      internal;
      proxy_pass http://127.0.0.1:1;
    }
  }
}
`;
}

describe.skipIf(SKIP_NGINX)("nginx auth_request in front of an upstream", () => {
  const seen: Seen[] = [];
  let upstream: http.Server;
  let licensing: HttpServer;
  let nginx: RunningNginx;
  let base: string;

  beforeAll(async () => {
    const app = await startUpstream(seen);
    upstream = app.server;
    const route = createForwardAuthRoute({
      check: scriptedCheck(),
      routes: ROUTES,
      logger: recordingLogger(),
      now: () => NOW_MS,
      options: { removeCredentialHeader: true },
    });
    licensing = createHttpServer({ bindings: [], routes: [route], logger: serverLogger() });
    const licensingPort = await licensing.listen("127.0.0.1", 0);
    nginx = await startNginx((dir, port) => nginxConf(dir, port, licensingPort, app.port));
    base = nginx.base;
  });

  afterAll(async () => {
    await nginx?.stop();
    await licensing?.close(1_000);
    await new Promise((done) => upstream?.close(done));
  });

  it("an allowed request reaches the upstream with the licence headers and without the credential", async () => {
    seen.length = 0;
    const res = await fetch(`${base}/v1/reports/export/2024?format=csv`, {
      headers: { "x-api-key": GOOD_KEY, "x-license-remaining": "999999", "x-license-plan": "enterprise" },
    });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("app ok");
    expect(res.headers.get("ratelimit")).toBe('"reports.export";r=97;t=3600');
    expect(res.headers.get("ratelimit-policy")).toBe('"reports.export";q=100');
    expect(seen).toHaveLength(1);
    const headers = seen[0]?.headers ?? {};
    expect(seen[0]?.url).toBe("/v1/reports/export/2024?format=csv");
    expect(headers).toMatchObject({
      "x-license-id": "lic_1",
      "x-license-plan": "pro",
      "x-account-id": "acc_1",
      "x-decision-id": "dec-1",
      "x-license-remaining": "97",
    });
    expect(headers["x-api-key"]).toBeUndefined();
    expect(headers["authorization"]).toBeUndefined();
  });

  it("a licence header the decision does not set cannot be supplied by the client", async () => {
    seen.length = 0;
    const res = await fetch(`${base}/boolean/x`, { headers: { authorization: `Bearer ${GOOD_KEY}`, "x-license-remaining": "999999" } });
    expect(res.status).toBe(200);
    expect(res.headers.get("ratelimit")).toBeNull();
    expect(seen[0]?.headers["x-license-id"]).toBe("lic_1");
    expect(seen[0]?.headers["x-license-remaining"]).toBeUndefined();
  });

  it("a request no route prices gets 403 NO_ROUTE and never reaches the upstream", async () => {
    seen.length = 0;
    const res = await fetch(`${base}/v1/anything`, { headers: { authorization: `Bearer ${GOOD_KEY}` } });
    expect(res.status).toBe(403);
    expect(await res.json()).toMatchObject({ reason: "NO_ROUTE" });
    expect(seen).toHaveLength(0);
  });

  it("a location that names its feature and cost prices the request itself", async () => {
    seen.length = 0;
    const res = await fetch(`${base}/named/x`, { headers: { "x-api-key": GOOD_KEY, "x-license-feature": "boolean" } });
    expect(res.status).toBe(200);
    expect(seen[0]?.headers["x-license-remaining"]).toBe("90");
  });

  it("an unentitled request gets 403 with the JSON body and never reaches the upstream", async () => {
    seen.length = 0;
    const res = await fetch(`${base}/v1/premium/report`, { headers: { "x-api-key": GOOD_KEY } });
    expect(res.status).toBe(403);
    expect(res.headers.get("content-type")).toBe("application/json");
    expect(await res.json()).toEqual({ reason: "FEATURE_NOT_ENTITLED", message: "the plan does not include premium", decision_id: "dec-premium" });
    expect(res.headers.get("retry-after")).toBeNull();
    expect(seen).toHaveLength(0);
  });

  it("an over-quota request gets 429 with Retry-After and RateLimit fields and never reaches the upstream", async () => {
    seen.length = 0;
    // A client-supplied X-License-Feature does not move the request to another feature.
    const res = await fetch(`${base}/v1/quota`, { headers: { "x-api-key": GOOD_KEY, "x-license-feature": "boolean" } });
    expect(res.status).toBe(429);
    expect(res.headers.get("retry-after")).toBe("3");
    expect(res.headers.get("ratelimit")).toBe('"quota";r=0;t=3600');
    expect(await res.json()).toEqual({ reason: "QUOTA_EXHAUSTED", message: "monthly quota used up", decision_id: "dec-quota" });
    expect(seen).toHaveLength(0);
  });

  it("a request without a credential gets 401 with WWW-Authenticate", async () => {
    seen.length = 0;
    const res = await fetch(`${base}/v1/reports`);
    expect(res.status).toBe(401);
    expect(res.headers.get("www-authenticate")).toBe('Bearer realm="licensing"');
    expect(await res.json()).toMatchObject({ reason: "UNKNOWN_CREDENTIAL" });
    expect(seen).toHaveLength(0);
  });

  it("BACKEND_UNAVAILABLE gets 503 with Retry-After", async () => {
    const res = await fetch(`${base}/backend/x`, { headers: { "x-api-key": GOOD_KEY } });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("5");
    expect(await res.json()).toMatchObject({ reason: "BACKEND_UNAVAILABLE" });
  });

  it("an unreachable licensing service fails closed with 503, not 500", async () => {
    seen.length = 0;
    const res = await fetch(`${base}/down/x`, { headers: { "x-api-key": GOOD_KEY } });
    expect(res.status).toBe(503);
    expect(res.headers.get("retry-after")).toBe("1");
    expect(await res.json()).toMatchObject({ reason: "BACKEND_UNAVAILABLE" });
    expect(seen).toHaveLength(0);
  });

  it("the shipped deploy/nginx/nginx.conf passes nginx -t", () => {
    if (NGINX === undefined) throw new Error("nginx not found");
    const dir = nginx.dir;
    for (const file of ["licensing-authz.conf", "licensing-protect.conf"]) copyFileSync(join(NGINX_DIR, file), join(dir, file));
    // The example's hostnames do not resolve here; nginx -t resolves upstream servers.
    const conf = readFileSync(join(NGINX_DIR, "nginx.conf"), "utf8").replace("licensing:8080", "127.0.0.1:8080").replace("app:3000", "127.0.0.1:3000");
    writeFileSync(join(dir, "shipped.conf"), conf);
    const result = spawnSync(NGINX, ["-t", "-p", dir, "-c", join(dir, "shipped.conf"), "-g", `pid ${dir}/shipped.pid; error_log stderr;`], {
      encoding: "utf8",
    });
    expect(result.stderr).toContain("syntax is ok");
  });
});
