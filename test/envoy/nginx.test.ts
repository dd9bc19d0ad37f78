/**
 * A real nginx (the Debian package) in front of a small upstream, with auth_request to the
 * forward-auth route, configured with the shipped snippets deploy/nginx/licensing-authz.conf and
 * licensing-protect.conf. Runs where nginx is installed; under CI (process.env.CI) a missing
 * nginx fails the test instead of skipping it, because CI installs it.
 */
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import * as http from "node:http";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createForwardAuthRoute } from "../../src/envoy/forward-auth.js";
import { createHttpServer, type HttpServer } from "../../src/server/http-server.js";
import { recordingLogger as serverLogger } from "../server/support.js";
import { GOOD_KEY, NOW_MS, recordingLogger, ROUTES, scriptedCheck } from "./support.js";

const NGINX_DIR = resolve(import.meta.dirname, "../../deploy/nginx");
const STARTUP_DEADLINE_MS = 10_000;

function nginxBinary(): string | undefined {
  for (const candidate of ["nginx", "/usr/sbin/nginx"]) {
    const probe = spawnSync(candidate, ["-v"], { stdio: "ignore" });
    if (probe.error === undefined && probe.status === 0) return candidate;
  }
  return undefined;
}

const nginx = nginxBinary();
const required = process.env["CI"] !== undefined && process.env["CI"] !== "";

interface Seen {
  readonly method: string;
  readonly url: string;
  readonly headers: http.IncomingHttpHeaders;
}

/** The protected service: records every request it receives. */
function startUpstream(seen: Seen[]): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((req, res) => {
    seen.push({ method: req.method ?? "", url: req.url ?? "", headers: req.headers });
    res.writeHead(200, { "content-type": "text/plain" }).end("app ok");
  });
  return new Promise((resolvePort) => server.listen(0, "127.0.0.1", () => resolvePort({ server, port: (server.address() as AddressInfo).port })));
}

/** A port that was free a moment ago (nginx binds it itself). */
function freePort(): Promise<number> {
  return new Promise((resolvePort, reject) => {
    const probe = net.createServer();
    probe.once("error", reject);
    probe.listen(0, "127.0.0.1", () => {
      const port = (probe.address() as AddressInfo).port;
      probe.close(() => resolvePort(port));
    });
  });
}

function nginxConf(dir: string, port: number, licensingPort: number, appPort: number): string {
  return `
master_process off;
events { worker_connections 64; }
http {
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
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

/** Resolves once nginx accepts connections; rejects if it exits or the deadline passes. */
function waitForNginx(child: ChildProcess, port: number, stderr: () => string): Promise<void> {
  const deadline = Date.now() + STARTUP_DEADLINE_MS;
  return new Promise((resolveReady, reject) => {
    const onExit = (code: number | null): void => reject(new Error(`nginx exited with ${code}: ${stderr()}`));
    child.once("exit", onExit);
    const attempt = (): void => {
      const socket = net.connect(port, "127.0.0.1");
      socket.once("connect", () => {
        socket.destroy();
        child.off("exit", onExit);
        resolveReady();
      });
      socket.once("error", () => {
        socket.destroy();
        if (Date.now() > deadline) reject(new Error(`nginx did not listen within ${STARTUP_DEADLINE_MS} ms: ${stderr()}`));
        else setTimeout(attempt, 20);
      });
    };
    attempt();
  });
}

describe.skipIf(nginx === undefined && !required)("nginx auth_request in front of an upstream", () => {
  const seen: Seen[] = [];
  let dir: string;
  let upstream: http.Server;
  let licensing: HttpServer;
  let child: ChildProcess | undefined;
  let base: string;
  let nginxStderr = "";

  beforeAll(async () => {
    if (nginx === undefined) throw new Error("nginx is required under CI (apt-get install -y nginx) but was not found");
    dir = mkdtempSync(join(tmpdir(), "licensing-nginx-"));
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
    const port = await freePort();
    const conf = join(dir, "nginx.conf");
    writeFileSync(conf, nginxConf(dir, port, licensingPort, app.port));
    child = spawn(nginx, ["-p", dir, "-c", conf, "-g", `daemon off; pid ${dir}/nginx.pid; error_log stderr warn;`], {
      stdio: ["ignore", "ignore", "pipe"],
    });
    child.stderr?.on("data", (chunk: Buffer) => (nginxStderr += chunk.toString()));
    await waitForNginx(child, port, () => nginxStderr);
    base = `http://127.0.0.1:${port}`;
  });

  afterAll(async () => {
    if (child !== undefined && child.exitCode === null) {
      const exited = new Promise((done) => child?.once("exit", done));
      child.kill("SIGTERM");
      await exited;
    }
    await licensing?.close(1_000);
    await new Promise((done) => upstream?.close(done));
    if (dir !== undefined) rmSync(dir, { recursive: true, force: true });
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
    if (nginx === undefined) throw new Error("nginx not found");
    for (const file of ["licensing-authz.conf", "licensing-protect.conf"]) copyFileSync(join(NGINX_DIR, file), join(dir, file));
    // The example's hostnames do not resolve here; nginx -t resolves upstream servers.
    const conf = readFileSync(join(NGINX_DIR, "nginx.conf"), "utf8").replace("licensing:8080", "127.0.0.1:8080").replace("app:3000", "127.0.0.1:3000");
    writeFileSync(join(dir, "shipped.conf"), conf);
    const result = spawnSync(nginx, ["-t", "-p", dir, "-c", join(dir, "shipped.conf"), "-g", `pid ${dir}/shipped.pid; error_log stderr;`], {
      encoding: "utf8",
    });
    expect(result.stderr).toContain("syntax is ok");
  });
});
