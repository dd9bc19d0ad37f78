/**
 * LicensingService: Check decides from memory; Report and Scale are not built yet and say so
 * with UNIMPLEMENTED rather than pretending to record anything.
 */
import { LicensingService } from "../gen/licensing/v1/licensing_pb.js";
import { unimplemented } from "../server/errors.js";
import { bindService, type ServiceBinding } from "../server/rpc.js";
import { createCheckHandler, type CheckDeps } from "./check.js";

export function createLicensingBinding(deps: CheckDeps): ServiceBinding<typeof LicensingService> {
  return bindService(LicensingService, {
    check: createCheckHandler(deps),
    report() {
      throw unimplemented("Report is not available in this version: usage metering is not built yet");
    },
    scale() {
      throw unimplemented("Scale is not available in this version: capacity scaling is not built yet");
    },
  });
}
