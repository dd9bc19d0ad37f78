/**
 * HTTP forward-auth on the HTTP port: `/authz` and `/authz/<anything>`, any method, for nginx
 * `auth_request`, Traefik ForwardAuth and Envoy's HTTP ext_authz mode.
 *
 * The original request: X-Original-URI / X-Forwarded-Uri (path and query), X-Original-Method /
 * X-Forwarded-Method; without them (Envoy's HTTP mode, which sends the original method, headers
 * and path after its path_prefix) this request's own method and the path after `/authz`. The
 * credential: Authorization / X-Api-Key. Per-route settings set by the proxy:
 * X-License-Feature, X-License-Cost, X-License-Environment, X-License-Credential (else the route
 * table and X-Environment). The proxy must set or clear the X-License-* request headers on every
 * auth request, or a client could choose its own feature (deploy/nginx and deploy/traefik do).
 *
 * Answers:
 * - allowed: exactly 200 (Envoy's HTTP mode treats any other 2xx as a deny), empty body, the
 *   x-license-* headers for the upstream, RateLimit fields, and `x-envoy-auth-headers-to-remove`
 *   naming our unset headers and (when configured) the credential header (Envoy's HTTP mode
 *   honours it; nginx and Traefik configs remove those headers themselves);
 * - denied: 401/403/429/400/500/503 with the JSON body, WWW-Authenticate / Retry-After /
 *   RateLimit as http-mapping.ts says, plus X-License-Status (the status) and X-License-Reason.
 *
 * nginx `auth_request` accepts only 2xx, 401 and 403 (anything else becomes a bare 500) and
 * drops the body. So a request carrying `X-License-Compat: nginx` gets every deny other than 401
 * answered as 403, with the true status in X-License-Status and the JSON body in X-License-Body;
 * deploy/nginx/nginx.conf reads them with auth_request_set and answers the client with the true
 * status, Retry-After and body from an `error_page 401 403 = @license_denied` location.
 */
import type * as http from "node:http";
import type { MaybePromise } from "../licensing/sync.js";
import { isPromise } from "../licensing/sync.js";
import type { HttpRoute } from "../server/http-server.js";
import type { RpcContext } from "../server/rpc.js";
import { createAuthorizer, type AuthzDeps, type ProxiedRequest, type RouteSetting } from "./authorizer.js";
import type { HeaderLookup } from "./credential.js";
import type { AllowAnswer, AuthzAnswer, DenyAnswer } from "./http-mapping.js";

/** The path the route serves (and, as a prefix, `/authz/...`). */
export const FORWARD_AUTH_PATH = "/authz";

/** Request header asking for nginx-compatible deny statuses (value `nginx`). */
export const COMPAT_HEADER = "x-license-compat";
/** Response headers every deny carries: the true status and the reason. */
export const STATUS_HEADER = "x-license-status";
export const REASON_HEADER = "x-license-reason";
/** Response header with the JSON body (non-ASCII escaped), in nginx compat mode only. */
export const BODY_HEADER = "x-license-body";
/** Envoy's HTTP mode removes the listed headers from the upstream request. */
const ENVOY_REMOVE_HEADER = "x-envoy-auth-headers-to-remove";

const SETTING_HEADERS: Readonly<Record<RouteSetting, string>> = {
  feature: "x-license-feature",
  cost: "x-license-cost",
  environment: "x-license-environment",
  credential: "x-license-credential",
};

/** The forward-auth route; mount it on the HTTP server's routes. */
export function createForwardAuthRoute(deps: AuthzDeps): HttpRoute {
  const authorize = createAuthorizer(deps);
  return {
    path: FORWARD_AUTH_PATH,
    prefix: true,
    handle(req, res): MaybePromise<void> {
      const ownPath = forwardAuthSuffix(req.url ?? "/");
      if (ownPath === undefined) {
        writeJson(res, 404, { error: "not_found", message: "forward-auth serves /authz and /authz/..." });
        return;
      }
      const answer = authorize(proxiedRequestOf(req, ownPath), new ForwardAuthContext(res));
      const compat = headerOf(req, COMPAT_HEADER) === "nginx";
      if (isPromise(answer)) return answer.then((ready) => writeAnswer(res, ready, compat));
      writeAnswer(res, answer, compat);
    },
  };
}

/** The target after `/authz` ("/" when none), or undefined for paths like `/authzfoo`. */
function forwardAuthSuffix(url: string): string | undefined {
  if (!url.startsWith(FORWARD_AUTH_PATH)) return undefined;
  const rest = url.slice(FORWARD_AUTH_PATH.length);
  if (rest === "" || rest.startsWith("?")) return `/${rest}`;
  return rest.startsWith("/") ? rest : undefined;
}

function proxiedRequestOf(req: http.IncomingMessage, ownPath: string): ProxiedRequest {
  const header: HeaderLookup = (name) => headerOf(req, name);
  const method = header("x-original-method") ?? header("x-forwarded-method") ?? req.method ?? "GET";
  return {
    method: method.toUpperCase(),
    path: header("x-original-uri") ?? header("x-forwarded-uri") ?? ownPath,
    header,
    setting: (name) => header(SETTING_HEADERS[name]),
  };
}

/** A header's value; repeated headers come joined by node:http (", "), set-cookie aside. */
function headerOf(req: http.IncomingMessage, name: string): string | undefined {
  const value = req.headers[name];
  return Array.isArray(value) ? value.join(", ") : value;
}

function writeAnswer(res: http.ServerResponse, answer: AuthzAnswer, compat: boolean): void {
  if (answer.allow) writeAllow(res, answer);
  else writeDeny(res, answer, compat);
}

function writeAllow(res: http.ServerResponse, answer: AllowAnswer): void {
  for (const pair of answer.upstreamHeaders) res.setHeader(pair.name, pair.value);
  for (const pair of answer.responseHeaders) res.setHeader(pair.name, pair.value);
  const remove = answer.credentialHeader === undefined ? answer.clearedUpstreamHeaders : [...answer.clearedUpstreamHeaders, answer.credentialHeader];
  if (remove.length > 0) res.setHeader(ENVOY_REMOVE_HEADER, remove.join(", "));
  res.setHeader("cache-control", "no-store");
  res.setHeader("content-length", 0);
  res.writeHead(200);
  res.end();
}

function writeDeny(res: http.ServerResponse, answer: DenyAnswer, compat: boolean): void {
  for (const pair of answer.headers) res.setHeader(pair.name, pair.value);
  res.setHeader(STATUS_HEADER, answer.status);
  res.setHeader(REASON_HEADER, answer.reason);
  if (compat) res.setHeader(BODY_HEADER, asciiOnly(answer.body));
  res.setHeader("cache-control", "no-store");
  res.setHeader("content-length", Buffer.byteLength(answer.body));
  res.writeHead(compat && answer.status !== 401 ? 403 : answer.status);
  res.end(answer.body);
}

/** JSON with every non-ASCII character as a \u escape: header values must be Latin-1 and are best ASCII. */
function asciiOnly(json: string): string {
  return json.replace(/[^\x20-\x7e]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`);
}

function writeJson(res: http.ServerResponse, status: number, body: object): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

/**
 * The RpcContext the check sees: no headers (the end user's headers are not call metadata; see
 * authorizer.ts), and a signal that aborts when the proxy hangs up before the answer. The
 * AbortController is made only if the check reads the signal.
 */
class ForwardAuthContext implements RpcContext {
  #controller: AbortController | undefined;

  constructor(private readonly res: http.ServerResponse) {}

  get transport(): "connect" {
    // The HTTP listener; forward-auth is not Connect, but RpcContext knows only the two ports.
    return "connect";
  }

  header(): string | undefined {
    return undefined;
  }

  get signal(): AbortSignal {
    if (this.#controller === undefined) {
      const controller = new AbortController();
      this.#controller = controller;
      if (this.res.closed && !this.res.writableFinished) controller.abort();
      else this.res.once("close", () => this.res.writableFinished || controller.abort());
    }
    return this.#controller.signal;
  }
}
