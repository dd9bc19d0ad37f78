/**
 * LicensingService: Check decides from memory, Report records usage durably (src/metering),
 * Scale moves licensed capacity within its policy (src/scaling).
 */
import {
  CheckRequestSchema,
  LicensingService,
  type ReportRequestSchema,
  type ReportResponseSchema,
  type ScaleRequestSchema,
  type ScaleResponseSchema,
} from "../gen/licensing/v1/licensing_pb.js";
import { decodeRequestWith } from "../server/errors.js";
import type { RawUnaryHandler } from "../server/grpc-server.js";
import { bindService, type ServiceBinding, type UnaryHandler } from "../server/rpc.js";
import { createCheckDecider, createCheckHandler, type CheckDeps } from "./check.js";
import { createCheckAnswerEncoder, decodeCheckRequest } from "./check-codec.js";
import { isPromise } from "./sync.js";

export interface LicensingDeps extends CheckDeps {
  readonly report: UnaryHandler<typeof ReportRequestSchema, typeof ReportResponseSchema>;
  readonly scale: UnaryHandler<typeof ScaleRequestSchema, typeof ScaleResponseSchema>;
}

/** The gRPC path of Check, where the port answers it with createCheckGrpcHandler. */
export const CHECK_PATH = "/licensing.v1.LicensingService/Check";

export function createLicensingBinding(deps: LicensingDeps): ServiceBinding<typeof LicensingService> {
  return bindService(LicensingService, {
    check: createCheckHandler(deps),
    report: deps.report,
    scale: deps.scale,
  });
}

/**
 * Check for the gRPC port (its `rawUnary` map), bytes to bytes: the request read by the
 * specialized decoder, the answer written straight to the bytes the binding's CheckResponse
 * would encode to (check-codec.ts), without the message in between. Same deps, same decisions,
 * same operation cache as the binding's Check, which the HTTP port and the authorizers use.
 */
export function createCheckGrpcHandler(deps: CheckDeps): RawUnaryHandler {
  const decideCheck = createCheckDecider(deps);
  const encode = createCheckAnswerEncoder(deps.cacheTtlMs);
  return (bytes, context) => {
    const request = decodeRequestWith(CheckRequestSchema.typeName, decodeCheckRequest, bytes);
    const answer = decideCheck(request, context);
    return isPromise(answer) ? answer.then(encode) : encode(answer);
  };
}
