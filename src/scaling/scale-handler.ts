/**
 * The LicensingService.Scale handler: validate, resolve the credential (the IdentityResolver
 * Check uses), scale (capacity-scaler.ts), answer.
 *
 * Errors: INVALID_ARGUMENT naming the field (also for a feature that is not a capacity
 * entitlement of the licence), UNAUTHENTICATED when the credential is refused (unknown,
 * revoked, expired, invalid; or license_id without a service token), FAILED_PRECONDITION when
 * the licence is suspended or outside its validity window, UNAVAILABLE when Postgres is
 * unreachable (nothing changed; retrying with the same request_id is safe).
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  Reason,
  ScaleOutcome,
  ScaleResponseSchema,
  type ScaleRequest,
  type ScaleRequestSchema,
  type ScaleResponse,
} from "../gen/licensing/v1/licensing_pb.js";
import { CHECK_LIMITS, snakeCase } from "../licensing/check-request.js";
import type { IdentityResolver, Resolution } from "../licensing/identity.js";
import { andThen } from "../licensing/sync.js";
import { invalidArgument, unauthenticated, unavailable } from "../server/errors.js";
import type { UnaryHandler } from "../server/rpc.js";
import { describe } from "../licensing/engine/background.js";
import { ScaleRefusedError, type CapacityScaler, type ScaleCommand, type ScaleResult, type ScalingLogger } from "./capacity-scaler.js";
import type { ScaleIntent } from "./policy.js";

export const SCALE_LIMITS = { requestIdChars: 128, reasonChars: 200 } as const;

export interface ScaleHandlerDeps {
  readonly resolveIdentity: IdentityResolver;
  readonly scaler: CapacityScaler;
  /** The account's one active licence (credentials that name an account); undefined: none or several. */
  readonly accountLicense: (accountId: string) => Promise<string | undefined>;
  /** Epoch ms. */
  readonly now: () => number;
  /** Told about database failures (answered UNAVAILABLE). */
  readonly logger: ScalingLogger;
}

export function createScaleHandler(deps: ScaleHandlerDeps): UnaryHandler<typeof ScaleRequestSchema, typeof ScaleResponseSchema> {
  return (req, context) => {
    const valid = validateScaleRequest(req);
    const resolution = deps.resolveIdentity(req.credential, context, deps.now());
    return andThen(resolution, (resolved: Resolution) => scaleFor(resolved, valid, req));
  };

  async function scaleFor(resolved: Resolution, valid: ValidScale, req: ScaleRequest): Promise<ScaleResponse> {
    if (resolved.denied !== undefined) {
      if (resolved.denied.reason === Reason.BACKEND_UNAVAILABLE) throw unavailable(resolved.denied.message);
      throw unauthenticated(`credential refused: ${resolved.denied.message}`);
    }
    const licenseId = resolved.identity.licenseId ?? (await accountLicense(resolved.identity.accountId ?? ""));
    const command: ScaleCommand = { licenseId, ...valid, caller: snakeCase(req.credential.case ?? "unknown") };
    try {
      return toScaleResponse(await deps.scaler.scale(command));
    } catch (err) {
      throw toRpcError(err, deps.logger, command);
    }
  }

  async function accountLicense(accountId: string): Promise<string> {
    let licenseId: string | undefined;
    try {
      licenseId = await deps.accountLicense(accountId);
    } catch (err) {
      throw unavailable("the licence database is unreachable; retry", err);
    }
    if (licenseId === undefined) throw unauthenticated(`credential refused: account ${accountId} has no single active licence`);
    return licenseId;
  }
}

type ValidScale = Omit<ScaleCommand, "licenseId" | "caller">;

/** Presence, ranges and lengths; each failure an INVALID_ARGUMENT naming the field. */
export function validateScaleRequest(req: ScaleRequest): ValidScale {
  const credential = req.credential;
  if (credential.case === undefined) {
    throw invalidArgument("credential", "one of api_key, bearer_token, license_token or license_id is required");
  }
  if (credential.value.length === 0) throw invalidArgument(`credential.${snakeCase(credential.case)}`, "must not be empty");
  if (credential.value.length > CHECK_LIMITS.credentialChars) {
    throw invalidArgument(`credential.${snakeCase(credential.case)}`, `must be at most ${CHECK_LIMITS.credentialChars} characters`);
  }
  if (req.feature.length === 0) throw invalidArgument("feature", "is required");
  if (req.feature.length > CHECK_LIMITS.featureChars) throw invalidArgument("feature", `must be at most ${CHECK_LIMITS.featureChars} characters`);
  if (req.requestId.length > SCALE_LIMITS.requestIdChars) {
    throw invalidArgument("request_id", `must be at most ${SCALE_LIMITS.requestIdChars} characters`);
  }
  if (req.reason.length > SCALE_LIMITS.reasonChars) throw invalidArgument("reason", `must be at most ${SCALE_LIMITS.reasonChars} characters`);
  return { feature: req.feature, intent: intentOf(req), requestId: req.requestId, reason: req.reason };
}

function intentOf(req: ScaleRequest): ScaleIntent {
  const target = req.target;
  switch (target.case) {
    case "desiredUnits":
      return { kind: "desired", units: safeCount("desired_units", target.value) };
    case "observed":
      return {
        kind: "observed",
        inUse: safeCount("observed.in_use", target.value.inUse),
        capacity: safeCount("observed.capacity", target.value.capacity),
      };
    case undefined:
      throw invalidArgument("target", "one of desired_units or observed is required");
  }
}

function safeCount(field: string, value: bigint): number {
  if (value < 0n) throw invalidArgument(field, "must be at least 0");
  if (value > BigInt(Number.MAX_SAFE_INTEGER)) throw invalidArgument(field, `must be at most ${Number.MAX_SAFE_INTEGER}`);
  return Number(value);
}

export function toScaleResponse(result: ScaleResult): ScaleResponse {
  return create(ScaleResponseSchema, {
    grantedUnits: BigInt(result.grantedUnits),
    previousUnits: BigInt(result.previousUnits),
    outcome: ScaleOutcome[result.outcome],
    nextChangeAt: timestampFromMs(result.nextChangeAtMs),
    depletesAt: result.depletesAtMs === null ? undefined : timestampFromMs(result.depletesAtMs),
    unitPrice: BigInt(result.unitPrice),
    projectedPeriodCost: BigInt(result.projectedPeriodCost),
    currency: result.currency,
  });
}

function toRpcError(err: unknown, logger: ScalingLogger, command: ScaleCommand): unknown {
  if (err instanceof ScaleRefusedError) {
    switch (err.refusal) {
      case "unknown_license":
        return unauthenticated(`credential refused: ${err.message}`);
      case "not_capacity":
        return invalidArgument("feature", err.message);
      case "license_suspended":
      case "license_not_valid":
        return new ConnectError(err.message, Code.FailedPrecondition);
    }
  }
  if (err instanceof ConnectError) return err;
  logger.warn({ licenseId: command.licenseId, feature: command.feature, err: describe(err) }, "scale failed");
  // A database failure: nothing was committed (one transaction), so a retry is safe.
  return unavailable("could not record the capacity change; retry with the same request_id", err);
}
