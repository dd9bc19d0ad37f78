/**
 * Every AdminService handler of issue #7 in one object, for the admin binding to spread:
 *
 *   bindService(AdminService, { ...rulesHandlers, ...createTokenAdminHandlers(...), ...createOperationsAdminHandlers(...) })
 */
import { createAccountAdminHandlers } from "./accounts.js";
import { createAccountTokenAdminHandlers } from "./account-tokens.js";
import { createDecisionAdminHandlers } from "./decisions.js";
import type { OperationsAdminDeps } from "./deps.js";
import { createApiKeyAdminHandlers } from "./keys.js";
import { createLicenseAdminHandlers } from "./licenses.js";
import { createStatusAdminHandlers } from "./status.js";

export interface AllOperationsAdminDeps extends OperationsAdminDeps {
  /** Drops a revoked account admin token from this replica's cache (createAdminAuthorizer(...).invalidate). */
  readonly onAdminTokenRevoked: (secretHash: string) => void;
}

export function createOperationsAdminHandlers(deps: AllOperationsAdminDeps) {
  return {
    ...createAccountAdminHandlers(deps),
    ...createLicenseAdminHandlers(deps),
    ...createApiKeyAdminHandlers(deps),
    ...createDecisionAdminHandlers(deps),
    ...createStatusAdminHandlers(deps),
    ...createAccountTokenAdminHandlers({ ...deps, onTokenRevoked: deps.onAdminTokenRevoked }),
  };
}

export type OperationsAdminHandlers = ReturnType<typeof createOperationsAdminHandlers>;
