/**
 * The built service in front of an application that knows nothing about licensing: a real
 * nginx with auth_request to /authz, and Envoy-shaped ext_authz calls on the gRPC port. Features
 * and costs come from the rules file's routes; decisions are the real ones (quota included).
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type * as http from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  CheckRequestSchema as EnvoyCheckRequestSchema,
  CheckResponseSchema as EnvoyCheckResponseSchema,
} from "../../src/gen/envoy/service/auth/v3/external_auth_pb.js";
import { envoyRequest } from "../envoy/support.js";
import { RawGrpcClient } from "../support/grpc.js";
import { NGINX_DIR, SKIP_NGINX, startNginx, startUpstream, tempPaths, type RunningNginx, type Seen } from "../support/nginx.js";
import { removeDataDir, runCli, startService, type RunningService } from "../support/service.js";

const RULES = `
version: 1
accounts: [{ id: acme, name: Acme }]
plans:
  - name: pro
    entitlements:
      - { feature: dashboards.view, kind: boolean }
      - { feature: reports.export, kind: quota, limit: 5, period: month }
  - name: free
    entitlements:
      - { feature: dashboards.view, kind: boolean }
licenses:
  - { id: acme-pro, account: acme, plan: pro }
  - { id: acme-free, account: acme, plan: free }
api_keys:
  - { id: pro-key, license: acme-pro }
  - { id: free-key, license: acme-free }
routes:
  - { id: export, method: POST, path_prefix: /v1/export, feature: reports.export, cost: 2 }
  - { id: everything, path_prefix: /v1/, feature: dashboards.view }
`;

describe.skipIf(SKIP_NGINX)("the service as an access proxy", () => {
  let service: RunningService;
  let nginx: RunningNginx;
  let upstream: http.Server;
  const seen: Seen[] = [];
  const keys = new Map<string, string>();

  beforeAll(async () => {
    service = await startService({ env: { DEMO_SEED: "off" } });
    const file = join(service.dataDir, "rules.yaml");
    await writeFile(file, RULES);
    const applied = await runCli(["apply", "-f", file, "--output", "json", "--server", service.grpcUrl], { env: { DATA_DIR: service.dataDir } });
    for (const key of (JSON.parse(applied.stdout) as { issued_keys: { id: string; secret: string }[] }).issued_keys) keys.set(key.id, key.secret);
    const app = await startUpstream(seen);
    upstream = app.server;
    nginx = await startNginx(
      (dir, port) => `
master_process off;
events { worker_connections 64; }
http {
  ${tempPaths(dir)}
  access_log off;
  upstream licensing_http { server 127.0.0.1:${service.httpPort}; }
  upstream app { server 127.0.0.1:${app.port}; }
  server {
    listen 127.0.0.1:${port};
    include ${NGINX_DIR}/licensing-authz.conf;
    location /v1/ {
      auth_request /_licensing;
      include ${NGINX_DIR}/licensing-protect.conf;
      proxy_pass http://app;
    }
  }
}`,
    );
  }, 60_000);

  afterAll(async () => {
    await nginx?.stop();
    await new Promise((done) => upstream?.close(done));
    await service?.stop();
    if (service) await removeDataDir(service.dataDir);
  });

  const through = (path: string, init: RequestInit = {}) => fetch(`${nginx.base}${path}`, init);

  it("an allowed request reaches the upstream with the licence headers and without the credential", async () => {
    seen.length = 0;
    const res = await through("/v1/dashboard", { headers: { "x-api-key": keys.get("free-key") ?? "" } });
    expect(res.status).toBe(200);
    expect(await res.text()).toBe("app ok");
    expect(seen).toHaveLength(1);
    expect(seen[0]?.headers["x-license-id"]).toBe("acme-free");
    expect(seen[0]?.headers["x-license-plan"]).toBe("free");
    expect(seen[0]?.headers["x-api-key"]).toBeUndefined();
  });

  it("a missing credential is 401 with WWW-Authenticate, and an unentitled route is 403", async () => {
    seen.length = 0;
    const anonymous = await through("/v1/dashboard");
    expect(anonymous.status).toBe(401);
    expect(anonymous.headers.get("www-authenticate")).toContain("Bearer");
    const unentitled = await through("/v1/export", { method: "POST", headers: { "x-api-key": keys.get("free-key") ?? "" } });
    expect(unentitled.status).toBe(403);
    expect(((await unentitled.json()) as { reason: string }).reason).toBe("FEATURE_NOT_ENTITLED");
    expect(seen).toHaveLength(0);
  });

  it("the route's cost is charged, and over quota the client gets 429 with Retry-After", async () => {
    seen.length = 0;
    const post = () => through("/v1/export", { method: "POST", headers: { "x-api-key": keys.get("pro-key") ?? "" } });
    expect((await post()).status).toBe(200);
    expect((await post()).status).toBe(200);
    const over = await post(); // 2 + 2 of 5 used: a third request of cost 2 does not fit
    expect(over.status).toBe(429);
    expect(Number(over.headers.get("retry-after"))).toBeGreaterThan(0);
    expect(((await over.json()) as { reason: string }).reason).toBe("QUOTA_EXHAUSTED");
    expect(seen).toHaveLength(2);
  });

  it("Envoy ext_authz on the gRPC port answers with the same decisions", async () => {
    const client = new RawGrpcClient(`127.0.0.1:${service.grpcPort}`);
    try {
      const call = (init: Parameters<typeof envoyRequest>[0]) =>
        client.call("/envoy.service.auth.v3.Authorization/Check", EnvoyCheckRequestSchema, EnvoyCheckResponseSchema, envoyRequest(init));
      const allowed = await call({ path: "/v1/dashboard", headers: { "x-api-key": keys.get("pro-key") ?? "" } });
      expect(allowed.status?.code).toBe(0);
      expect(allowed.httpResponse.case).toBe("okResponse");
      const exhausted = await call({
        method: "POST",
        path: "/anything",
        headers: { "x-api-key": keys.get("pro-key") ?? "" },
        contextExtensions: { feature: "reports.export", cost: "1" },
      });
      // 4 of 5 used through nginx: one unit is left for a cost-1 request, then none.
      expect(exhausted.status?.code).toBe(0);
      const denied = await call({
        method: "POST",
        path: "/anything",
        headers: { "x-api-key": keys.get("pro-key") ?? "" },
        contextExtensions: { feature: "reports.export", cost: "1" },
      });
      expect(denied.status?.code).toBe(8);
      expect(denied.httpResponse.case).toBe("deniedResponse");
      if (denied.httpResponse.case === "deniedResponse") {
        expect(denied.httpResponse.value.status?.code).toBe(429);
        const retryAfter = denied.httpResponse.value.headers.find((h) => h.header?.key.toLowerCase() === "retry-after");
        expect(Number(retryAfter?.header?.value)).toBeGreaterThan(0);
      }
    } finally {
      client.close();
    }
  });
});
