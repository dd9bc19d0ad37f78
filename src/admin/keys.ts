/**
 * AdminService API keys: CreateApiKey (the secret is in the response once; only its SHA-256 is
 * stored), ListApiKeys (prefix only), RevokeApiKey.
 *
 * Named keys.ts for the API keys of licences; licence-token signing keys are in tokens.ts.
 * A key belongs to its licence's account: account tokens manage their own licences' keys only.
 */
import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import {
  CreateApiKeyResponseSchema,
  ListApiKeysResponseSchema,
  RevokeApiKeyResponseSchema,
  type AdminService,
} from "../gen/licensing/admin/v1/admin_pb.js";
import { generateApiKey } from "../licensing/api-keys.js";
import { invalidArgument, notFound } from "../server/errors.js";
import type { UnaryHandlers } from "../server/rpc.js";
import { apiKeyMessage } from "./convert.js";
import type { OperationsAdminDeps } from "./deps.js";
import { licenseForCaller } from "./licenses.js";
import { canSee } from "./scope.js";
import { adminWrite, bumpLicenseVersion } from "./writes.js";
import { NAME, SLUG } from "../rules/validate.js";

type KeyHandlers = Pick<UnaryHandlers<typeof AdminService>, "createApiKey" | "listApiKeys" | "revokeApiKey">;


export function createApiKeyAdminHandlers(deps: OperationsAdminDeps): KeyHandlers {
  const { db } = deps;

  return {
    async createApiKey(request, context) {
      const caller = await deps.authorize(context);
      if (request.licenseId === "") throw invalidArgument("license_id", "required");
      // The rules file's shapes, so an imperatively made key can be exported and re-applied.
      const id = request.id === "" ? defaultId(request.licenseId) : request.id;
      if (!SLUG.regex.test(id)) throw invalidArgument("id", SLUG.message);
      request.scopes.forEach((scope, i) => {
        if (!NAME.regex.test(scope)) throw invalidArgument(`scopes[${i}]`, NAME.message);
      });
      const now = new Date(deps.now());
      const expiresAt = request.expiresAt === undefined ? null : timestampDate(request.expiresAt);
      if (expiresAt !== null && expiresAt.getTime() <= now.getTime()) throw invalidArgument("expires_at", "must be in the future");
      const key = generateApiKey();
      const row = await adminWrite(db, async (trx) => {
        await licenseForCaller(trx, caller, request.licenseId, { forUpdate: true });
        const inserted = await trx
          .insertInto("api_keys")
          .values({
            id,
            license_id: request.licenseId,
            prefix: key.prefix,
            secret_hash: key.hash,
            scopes: [...new Set(request.scopes)].sort(),
            expires_at: expiresAt,
            revoked_at: null,
            created_at: now,
            updated_at: now,
          })
          .onConflict((oc) => oc.column("id").doNothing())
          .returningAll()
          .executeTakeFirst();
        if (inserted === undefined) throw new ConnectError(`API key "${id}" already exists`, Code.AlreadyExists);
        await bumpLicenseVersion(trx, request.licenseId, now);
        return inserted;
      });
      deps.onChange(`key:${row.secret_hash}`);
      deps.onChange(`license:${row.license_id}`);
      // The prefix, never the secret.
      deps.logger.info({ keyId: row.id, licenseId: row.license_id, prefix: row.prefix }, "API key created");
      return create(CreateApiKeyResponseSchema, { key: apiKeyMessage(row), secret: key.secret });
    },

    async listApiKeys(request, context) {
      const caller = await deps.authorize(context);
      if (request.licenseId !== "") await licenseForCaller(db, caller, request.licenseId);
      let query = db
        .selectFrom("api_keys")
        .innerJoin("licenses", "licenses.id", "api_keys.license_id")
        .selectAll("api_keys")
        .orderBy("api_keys.id");
      if (request.licenseId !== "") query = query.where("api_keys.license_id", "=", request.licenseId);
      if (!caller.operator) query = query.where("licenses.account_id", "=", caller.accountId);
      const rows = await query.execute();
      return create(ListApiKeysResponseSchema, { keys: rows.map(apiKeyMessage) });
    },

    async revokeApiKey(request, context) {
      const caller = await deps.authorize(context);
      if (request.keyId === "") throw invalidArgument("key_id", "required");
      const now = new Date(deps.now());
      const result = await adminWrite(db, async (trx) => {
        const found = await trx
          .selectFrom("api_keys")
          .innerJoin("licenses", "licenses.id", "api_keys.license_id")
          .selectAll("api_keys")
          .select("licenses.account_id")
          .where("api_keys.id", "=", request.keyId)
          .forUpdate()
          .executeTakeFirst();
        if (found === undefined || !canSee(caller, found.account_id)) throw notFound(`API key "${request.keyId}" does not exist`);
        const { account_id: _account, ...key } = found;
        if (key.revoked_at !== null) return { row: key, changed: false };
        const row = await trx
          .updateTable("api_keys")
          .set({ revoked_at: now, updated_at: now })
          .where("id", "=", key.id)
          .returningAll()
          .executeTakeFirstOrThrow();
        await bumpLicenseVersion(trx, key.license_id, now);
        return { row, changed: true };
      });
      if (result.changed) {
        deps.onChange(`key:${result.row.secret_hash}`);
        deps.onChange(`license:${result.row.license_id}`);
        deps.logger.info({ keyId: result.row.id, licenseId: result.row.license_id, prefix: result.row.prefix }, "API key revoked");
      }
      return create(RevokeApiKeyResponseSchema, { key: apiKeyMessage(result.row) });
    },
  };
}

/** "<owner>-<8 hex>", within the 63 characters of a slug. */
export function defaultId(owner: string): string {
  return `${owner.slice(0, 54)}-${randomBytes(4).toString("hex")}`;
}
