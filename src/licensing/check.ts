/**
 * The Check handler: validate, resolve the credential, find the licence snapshot, decide, answer.
 *
 * Memory first: with the key and the licence cached, a Check is synchronous (no promise, no
 * await). Only a cache miss waits on Postgres, and concurrent misses share one load.
 */
import { randomUUID } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { DurationSchema, type Duration } from "@bufbuild/protobuf/wkt";
import {
  CheckResponseSchema,
  Decision,
  Reason,
  type CheckRequest,
  type CheckRequestSchema,
  type CheckResponse,
  type CheckResponseSchema as CheckResponseDesc,
} from "../gen/licensing/v1/licensing_pb.js";
import { invalidArgument, unauthenticated, unavailable, unimplemented } from "../server/errors.js";
import type { UnaryHandler } from "../server/rpc.js";
import { hashApiKey } from "./api-keys.js";
import { decide, keyVerdict, UnsupportedEntitlementError, type DecisionRequest, type Verdict } from "./decide.js";
import { MISS, type LoadingCache } from "./loading-cache.js";
import type { ApiKeyRecord, LicenseSnapshot } from "./snapshot.js";

export interface CheckDeps {
  /** API keys by the SHA-256 hex of their secret. */
  readonly keys: LoadingCache<string, ApiKeyRecord>;
  /** Licence snapshots by licence id. */
  readonly licenses: LoadingCache<string, LicenseSnapshot>;
  /** Epoch milliseconds. */
  readonly now: () => number;
  /** cache_ttl for answers that consumed nothing, in ms. */
  readonly cacheTtlMs: number;
}

/** Longest accepted values, so one request cannot make the service hash or store megabytes. */
export const CHECK_LIMITS = {
  credentialChars: 4096,
  featureChars: 128,
  environmentChars: 64,
  operationIdChars: 128,
  instanceIdChars: 256,
  attributes: 32,
  attributeChars: 256,
} as const;

export function createCheckHandler(deps: CheckDeps): UnaryHandler<typeof CheckRequestSchema, typeof CheckResponseDesc> {
  const reusableTtl = durationOfMs(deps.cacheTtlMs);
  const noTtl = durationOfMs(0);

  function answer(verdict: Verdict, snapshot: LicenseSnapshot | undefined, consumed: boolean): CheckResponse {
    return create(CheckResponseSchema, {
      decision: verdict.allow ? Decision.ALLOW : Decision.DENY,
      reason: verdict.reason,
      message: verdict.message,
      licenseId: snapshot?.licenseId ?? "",
      plan: snapshot?.plan ?? "",
      accountId: snapshot?.accountId ?? "",
      policyVersion: BigInt(snapshot?.version ?? 0),
      decisionId: randomUUID(),
      cacheTtl: consumed ? noTtl : reusableTtl,
    });
  }

  function decideFor(key: ApiKeyRecord, request: DecisionRequest, snapshot: LicenseSnapshot | undefined): CheckResponse {
    if (snapshot === undefined) {
      // The key's licence was deleted between the two reads: the key no longer grants anything.
      return answer({ allow: false, reason: Reason.UNKNOWN_CREDENTIAL, message: "unknown API key" }, undefined, false);
    }
    try {
      return answer(decide(snapshot, request, deps.now()), snapshot, false);
    } catch (error) {
      if (error instanceof UnsupportedEntitlementError) throw unimplemented(error.message);
      throw error;
    }
  }

  function withKey(key: ApiKeyRecord | undefined, request: DecisionRequest): CheckResponse | Promise<CheckResponse> {
    if (key === undefined) {
      return answer({ allow: false, reason: Reason.UNKNOWN_CREDENTIAL, message: "unknown API key" }, undefined, false);
    }
    const keyDenied = keyVerdict(key, deps.now());
    if (keyDenied !== undefined) return answer(keyDenied, undefined, false);
    const request_ = { ...request, roles: key.scopes };
    const cached = deps.licenses.peek(key.licenseId);
    if (cached !== MISS) return decideFor(key, request_, cached);
    return deps.licenses.get(key.licenseId).then(
      (snapshot) => decideFor(key, request_, snapshot),
      (error: unknown) => {
        throw unavailable("could not load the licence: the database is unreachable", error);
      },
    );
  }

  return function check(req) {
    const request = validateCheckRequest(req);
    switch (req.credential.case) {
      case "apiKey": {
        const hash = hashApiKey(req.credential.value);
        const cached = deps.keys.peek(hash);
        if (cached !== MISS) return withKey(cached, request);
        return deps.keys.get(hash).then(
          (key) => withKey(key, request),
          (error: unknown) => {
            throw unavailable("could not look up the API key: the database is unreachable", error);
          },
        );
      }
      case "licenseId":
        throw unauthenticated("naming a licence directly (license_id) needs a service token with that right");
      case "bearerToken":
      case "licenseToken":
        throw unimplemented(`credential.${req.credential.case === "bearerToken" ? "bearer_token" : "license_token"}: not supported yet; use api_key`);
      case undefined:
        throw invalidArgument("credential", "one of api_key, bearer_token, license_token or license_id is required");
    }
  };
}

/** Checks field presence, lengths and ranges; throws INVALID_ARGUMENT naming the field. */
export function validateCheckRequest(req: CheckRequest): DecisionRequest {
  if (req.credential.case !== undefined) {
    const value = req.credential.value;
    const field = `credential.${snakeCase(req.credential.case)}`;
    if (value.length === 0) throw invalidArgument(field, "must not be empty");
    if (value.length > CHECK_LIMITS.credentialChars) {
      throw invalidArgument(field, `must be at most ${CHECK_LIMITS.credentialChars} characters`);
    }
  }
  if (req.feature.length === 0) throw invalidArgument("feature", "is required");
  maxChars("feature", req.feature, CHECK_LIMITS.featureChars);
  maxChars("environment", req.environment, CHECK_LIMITS.environmentChars);
  maxChars("operation_id", req.operationId, CHECK_LIMITS.operationIdChars);
  maxChars("instance_id", req.instanceId, CHECK_LIMITS.instanceIdChars);
  validateAttributes(req.attributes);
  const quantity = req.quantity ?? 1n;
  if (quantity < 0n) throw invalidArgument("quantity", "must be at least 0");
  if (quantity > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument("quantity", "is too large");
  return { feature: req.feature, quantity: Number(quantity), environment: req.environment, roles: [] };
}

function validateAttributes(attributes: Record<string, string>): void {
  let count = 0;
  for (const name in attributes) {
    if (++count > CHECK_LIMITS.attributes) {
      throw invalidArgument("attributes", `at most ${CHECK_LIMITS.attributes} entries`);
    }
    maxChars(`attributes.${name.slice(0, 32)}`, name, CHECK_LIMITS.attributeChars);
    maxChars(`attributes.${name.slice(0, 32)}`, attributes[name] ?? "", CHECK_LIMITS.attributeChars);
  }
}

function maxChars(field: string, value: string, max: number): void {
  if (value.length > max) throw invalidArgument(field, `must be at most ${max} characters (got ${value.length})`);
}

function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}

function durationOfMs(ms: number): Duration {
  return create(DurationSchema, { seconds: BigInt(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1_000_000 });
}
