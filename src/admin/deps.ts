/** What the account, licence, key, decision and status admin handlers are built from. */
import type { Kysely } from "kysely";
import type { Logger } from "../logger.js";
import type { Database } from "../store/schema.js";
import type { AdminAuthorize } from "./scope.js";

export interface OperationsAdminDeps {
  readonly db: Kysely<Database>;
  /** Who is calling (createAdminAuthorizer(...).authorize). */
  readonly authorize: AdminAuthorize;
  /**
   * Told after a write, with the payload the database trigger NOTIFYs ("license:<id>",
   * "key:<secret_hash>"), so this replica drops its cached copy before answering; the other
   * replicas hear the NOTIFY. Pass the caches' `onChange`.
   */
  readonly onChange: (payload: string) => void;
  /** Epoch ms. */
  readonly now: () => number;
  readonly logger: Logger;
}
