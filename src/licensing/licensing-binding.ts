/**
 * LicensingService: Check decides from memory, Report records usage durably (src/metering),
 * Scale moves licensed capacity within its policy (src/scaling).
 */
import {
  LicensingService,
  type ReportRequestSchema,
  type ReportResponseSchema,
  type ScaleRequestSchema,
  type ScaleResponseSchema,
} from "../gen/licensing/v1/licensing_pb.js";
import { bindService, type ServiceBinding, type UnaryHandler } from "../server/rpc.js";
import { createCheckHandler, type CheckDeps } from "./check.js";

export interface LicensingDeps extends CheckDeps {
  readonly report: UnaryHandler<typeof ReportRequestSchema, typeof ReportResponseSchema>;
  readonly scale: UnaryHandler<typeof ScaleRequestSchema, typeof ScaleResponseSchema>;
}

export function createLicensingBinding(deps: LicensingDeps): ServiceBinding<typeof LicensingService> {
  return bindService(LicensingService, {
    check: createCheckHandler(deps),
    report: deps.report,
    scale: deps.scale,
  });
}
