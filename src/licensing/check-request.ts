/**
 * Validation of a CheckRequest: presence, lengths and ranges, each failure an INVALID_ARGUMENT
 * naming the field. Limits keep one request from making the service hash or store megabytes.
 */
import type { CheckRequest } from "../gen/licensing/v1/licensing_pb.js";
import { invalidArgument } from "../server/errors.js";

/** quantity's upper bound as a BigInt, made once rather than on every Check. */
const MAX_QUANTITY = BigInt(Number.MAX_SAFE_INTEGER);

export const CHECK_LIMITS = {
  credentialChars: 8192,
  featureChars: 128,
  environmentChars: 64,
  operationIdChars: 128,
  instanceIdChars: 256,
  attributes: 32,
  attributeChars: 256,
} as const;

/** The request's fields after validation, with defaults applied. */
export interface ValidCheck {
  readonly feature: string;
  /** Units to consume; 1 when absent, 0 asks without consuming. */
  readonly quantity: number;
  readonly environment: string;
  readonly operationId: string;
  readonly instanceId: string;
  readonly dryRun: boolean;
}

export function validateCheckRequest(req: CheckRequest): ValidCheck {
  const credential = req.credential;
  if (credential.case === undefined) {
    throw invalidArgument("credential", "one of api_key, bearer_token, license_token or license_id is required");
  }
  const length = credential.value.length;
  if (length === 0 || length > CHECK_LIMITS.credentialChars) {
    const field = `credential.${snakeCase(credential.case)}`;
    if (length === 0) throw invalidArgument(field, "must not be empty");
    maxChars(field, credential.value, CHECK_LIMITS.credentialChars);
  }
  if (req.feature.length === 0) throw invalidArgument("feature", "is required");
  maxChars("feature", req.feature, CHECK_LIMITS.featureChars);
  maxChars("environment", req.environment, CHECK_LIMITS.environmentChars);
  maxChars("operation_id", req.operationId, CHECK_LIMITS.operationIdChars);
  maxChars("instance_id", req.instanceId, CHECK_LIMITS.instanceIdChars);
  validateAttributes(req.attributes);
  const quantity = req.quantity ?? 1n;
  if (quantity < 0n) throw invalidArgument("quantity", "must be at least 0");
  if (quantity > MAX_QUANTITY) throw invalidArgument("quantity", `must be at most ${Number.MAX_SAFE_INTEGER}`);
  return {
    feature: req.feature,
    quantity: Number(quantity),
    environment: req.environment,
    operationId: req.operationId,
    instanceId: req.instanceId,
    dryRun: req.dryRun,
  };
}

function validateAttributes(attributes: Record<string, string>): void {
  let count = 0;
  for (const name in attributes) {
    if (++count > CHECK_LIMITS.attributes) throw invalidArgument("attributes", `at most ${CHECK_LIMITS.attributes} entries`);
    const field = `attributes.${name.slice(0, 32)}`;
    maxChars(field, name, CHECK_LIMITS.attributeChars);
    maxChars(field, attributes[name] ?? "", CHECK_LIMITS.attributeChars);
  }
}

function maxChars(field: string, value: string, max: number): void {
  if (value.length > max) throw invalidArgument(field, `must be at most ${max} characters (got ${value.length})`);
}

export function snakeCase(name: string): string {
  return name.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);
}
