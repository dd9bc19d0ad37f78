/**
 * AdminService handlers. Every call is authorized first; rules errors become INVALID_ARGUMENT
 * with one line per problem; any write invalidates the hot path's caches so the next Check
 * sees it.
 */
import { create } from "@bufbuild/protobuf";
import type { Kysely } from "kysely";
import {
  AdminService,
  ApplyResponseSchema,
  ChangeAction,
  ChangeSchema,
  ExportResponseSchema,
  IssuedApiKeySchema,
} from "../gen/licensing/admin/v1/admin_pb.js";
import type { Logger } from "../logger.js";
import { applyRules, type ApplyResult } from "../rules/apply.js";
import { RulesError } from "../rules/errors.js";
import { exportRules, formatRules } from "../rules/export.js";
import { parseRules } from "../rules/parse.js";
import { invalidArgument } from "../server/errors.js";
import { bindService, type ServiceBinding, type UnaryHandlers } from "../server/rpc.js";
import type { Database } from "../store/schema.js";
import type { AdminAuthenticator } from "./admin-auth.js";

/** AdminService methods implemented elsewhere (licence tokens and signing keys: tokens.ts). */
export type ExtraAdminHandlers = Omit<UnaryHandlers<typeof AdminService>, "apply" | "export">;

export interface AdminDeps {
  readonly extraHandlers: ExtraAdminHandlers;
  readonly db: Kysely<Database>;
  readonly authenticate: AdminAuthenticator;
  /** Called after a write, so cached licences and keys are reloaded. */
  readonly onRulesChanged: () => void;
  readonly now: () => number;
  readonly logger: Logger;
}

const ACTIONS = {
  create: ChangeAction.CREATE,
  update: ChangeAction.UPDATE,
  delete: ChangeAction.DELETE,
} as const;

export function createAdminBinding(deps: AdminDeps): ServiceBinding<typeof AdminService> {
  return bindService(AdminService, {
    ...deps.extraHandlers,
    async apply(request, context) {
      deps.authenticate(context);
      const result = await withRulesErrors(async () =>
        applyRules(deps.db, parseRules(request.document), {
          prune: request.prune,
          dryRun: request.dryRun,
          now: new Date(deps.now()),
        }),
      );
      if (!request.dryRun && result.changes.length > 0) deps.onRulesChanged();
      logApplied(deps.logger, request.dryRun, request.prune, result);
      return toApplyResponse(result, request.dryRun);
    },

    async export(request, context) {
      deps.authenticate(context);
      const format = request.format === "" ? "yaml" : request.format;
      if (format !== "yaml" && format !== "json") throw invalidArgument("format", 'must be "yaml" or "json"');
      return create(ExportResponseSchema, { document: formatRules(await exportRules(deps.db), format) });
    },
  });
}

async function withRulesErrors<T>(run: () => Promise<T>): Promise<T> {
  try {
    return await run();
  } catch (error) {
    if (error instanceof RulesError) throw invalidArgument("document", `${error.issues.length} error(s)\n${error.lines().join("\n")}`);
    throw error;
  }
}

function toApplyResponse(result: ApplyResult, dryRun: boolean) {
  return create(ApplyResponseSchema, {
    dryRun,
    changes: result.changes.map((change) =>
      create(ChangeSchema, { kind: change.kind, id: change.id, action: ACTIONS[change.action], fields: change.fields }),
    ),
    issuedKeys: result.issuedKeys.map((key) =>
      create(IssuedApiKeySchema, { id: key.id, kind: key.kind, licenseId: key.licenseId, secret: key.secret, prefix: key.prefix }),
    ),
  });
}

/** Logs what changed by kind, id and action only: never a secret, never the document. */
function logApplied(logger: Logger, dryRun: boolean, prune: boolean, result: ApplyResult): void {
  logger.info(
    {
      dryRun,
      prune,
      changes: result.changes.map((c) => `${c.action} ${c.kind} ${c.id}`),
      issuedKeys: result.issuedKeys.map((k) => k.id),
    },
    dryRun ? "rules checked (dry run)" : "rules applied",
  );
}
