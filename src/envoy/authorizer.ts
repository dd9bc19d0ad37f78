/**
 * Authorizes one proxied request: finds the credential, the feature and its cost, asks the
 * licensing Check, and maps the decision to an HTTP answer (http-mapping.ts). Shared by Envoy
 * ext_authz (ext-authz.ts) and forward-auth (forward-auth.ts), which only translate their wire.
 *
 * Never throws and never rejects: a deny, a missing credential, an unmapped route and a failed
 * check are all answers. Synchronous whenever the check is (memory first, no promise).
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { CheckRequest, CheckResponse } from "../gen/licensing/v1/licensing_pb.js";
import { LICENSE_TOKEN_ISSUER } from "../licensing/credentials/license-tokens.js";
import { isPromise, type MaybePromise } from "../licensing/sync.js";
import { isUnexpectedError } from "../server/errors.js";
import type { RpcContext } from "../server/rpc.js";
import { findCredential, parseCredentialHint, type HeaderLookup } from "./credential.js";
import {
  answerForDecision,
  answerForError,
  missingCredentialAnswer,
  noRouteAnswer,
  routeMisconfiguredAnswer,
  type AuthzAnswer,
} from "./http-mapping.js";
import { createRouteMatcher, type RouteMatcher, type RouteTable } from "./route-table.js";

/** The licensing Check, as the lead wires it (the LicensingService handler). */
export type CheckFn = (request: CheckRequest, context: RpcContext) => MaybePromise<CheckResponse>;

/** The log levels used; a pino logger fits. */
export interface AuthzLogger {
  debug(obj: object, msg: string): void;
  warn(obj: object, msg: string): void;
  error(obj: object, msg: string): void;
}

export interface AuthzOptions {
  /**
   * Remove the header that carried the credential (`authorization` or `x-api-key`) from the
   * request before it goes upstream, so services behind the proxy never see licence secrets.
   */
  readonly removeCredentialHeader: boolean;
  /** The `iss` that marks a bearer JWT as a licence token. Default "licensing". */
  readonly licenseTokenIssuer?: string;
}

export interface AuthzDeps {
  readonly check: CheckFn;
  /**
   * Route rules for requests whose proxy names no feature: a table (matched as
   * route-table.ts says), or a matcher (e.g. one that follows rules-file reloads). None: every
   * such request answers 403 NO_ROUTE.
   */
  readonly routes?: RouteTable | RouteMatcher;
  readonly logger: AuthzLogger;
  /** Epoch milliseconds; turns resets_at into seconds. Default Date.now. */
  readonly now?: () => number;
  readonly options: AuthzOptions;
}

/** Per-route settings the proxy may give (Envoy context_extensions, X-License-* headers). */
export type RouteSetting = "feature" | "cost" | "environment" | "credential";

/** A proxied request as both transports see it. */
export interface ProxiedRequest {
  /** The original request's method, upper case. */
  readonly method: string;
  /** The original request target: path and query string. */
  readonly path: string;
  /** The original request's headers, by lower-case name. */
  readonly header: HeaderLookup;
  /** A per-route setting from the proxy, or undefined. */
  readonly setting: (name: RouteSetting) => string | undefined;
}

/**
 * Answers a proxied request. `context` is passed to the check as is: its headers are the
 * proxy's call metadata, never the end user's headers, so a client cannot present a service
 * token to the Check.
 */
export type Authorizer = (request: ProxiedRequest, context: RpcContext) => MaybePromise<AuthzAnswer>;

/** What the request asks for, or the answer that ends it early. */
type Ask = { readonly feature: string; readonly cost: number } | { readonly answer: AuthzAnswer };

export function createAuthorizer(deps: AuthzDeps): Authorizer {
  const matchRoute = routeMatcherOf(deps.routes);
  const issuer = deps.options.licenseTokenIssuer ?? LICENSE_TOKEN_ISSUER;
  const now = deps.now ?? Date.now;
  const removeCredential = deps.options.removeCredentialHeader;

  function ask(request: ProxiedRequest): Ask {
    const cost = parseCost(request.setting("cost"));
    if (cost === INVALID_COST) {
      deps.logger.warn({ cost: request.setting("cost") }, "route setting cost is not an integer from 0");
      return { answer: routeMisconfiguredAnswer("the proxy's route settings are invalid (cost)") };
    }
    const feature = request.setting("feature");
    if (feature !== undefined && feature.length > 0) return { feature, cost: cost ?? 1 };
    const rule = matchRoute(request.method, request.path);
    if (rule !== undefined) return { feature: rule.feature, cost: cost ?? rule.cost };
    // The query string stays out of the log: it may carry secrets.
    const path = pathOnly(request.path);
    deps.logger.debug({ method: request.method, path }, "no route names a feature");
    return { answer: noRouteAnswer(request.method, path) };
  }

  /** The check threw: a bug (error), no decision possible (warn), or the client's request (debug). */
  function failed(err: unknown): AuthzAnswer {
    if (isUnexpectedError(err)) deps.logger.error({ err }, "licensing check failed");
    else if (err instanceof ConnectError && err.code === Code.InvalidArgument) deps.logger.debug({ err }, "licensing check refused the request");
    else deps.logger.warn({ err }, "licensing check could not decide");
    return answerForError(err);
  }

  return (request, context) => {
    const found = findCredential(request.header, parseCredentialHint(request.setting("credential")), issuer);
    if (found === undefined) return missingCredentialAnswer();
    const wanted = ask(request);
    if ("answer" in wanted) return wanted.answer;
    // A literal with every field, as create(CheckRequestSchema, ...) would make it without its
    // reflection: this runs on every proxied request.
    const checkRequest: CheckRequest = {
      $typeName: "licensing.v1.CheckRequest",
      credential: found.credential,
      feature: wanted.feature,
      quantity: BigInt(wanted.cost),
      environment: request.setting("environment") || request.header("x-environment") || "",
      operationId: "",
      instanceId: request.header("x-instance-id") ?? "",
      attributes: {},
      dryRun: false,
    };
    const credentialHeader = removeCredential ? found.header : undefined;
    const answer = (response: CheckResponse): AuthzAnswer => answerForDecision(response, wanted.feature, credentialHeader, now());
    let result: MaybePromise<CheckResponse>;
    try {
      result = deps.check(checkRequest, context);
    } catch (err) {
      return failed(err);
    }
    return isPromise(result) ? result.then(answer, failed) : answer(result);
  };
}

function routeMatcherOf(routes: RouteTable | RouteMatcher | undefined): RouteMatcher {
  if (routes === undefined) return () => undefined;
  return typeof routes === "function" ? routes : createRouteMatcher(routes);
}

const INVALID_COST = -1;

/** The cost setting: undefined when absent, INVALID_COST when not an integer from 0. */
function parseCost(value: string | undefined): number | undefined {
  if (value === undefined || value.length === 0) return undefined;
  if (!/^\d{1,15}$/.test(value)) return INVALID_COST;
  return Number(value);
}

function pathOnly(target: string): string {
  const query = target.indexOf("?");
  return query === -1 ? target : target.slice(0, query);
}
