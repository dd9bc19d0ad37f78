/**
 * Account-scoped admin tokens (`lk_adm_…`): secrets, storage and the operator-only RPCs that
 * manage them (CreateAccountAdminToken, ListAccountAdminTokens, RevokeAccountAdminToken).
 *
 * A token is `lk_adm_` and 43 base62 characters (256 random bits, the same body as API keys),
 * so a plain SHA-256 is a sufficient hash and lookup is by hash. Only the hash and a 12
 * character prefix are stored; the secret is returned once by CreateAccountAdminToken and never
 * logged.
 */
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Kysely, Selectable } from "kysely";
import {
  AccountAdminTokenSchema,
  CreateAccountAdminTokenResponseSchema,
  ListAccountAdminTokensResponseSchema,
  RevokeAccountAdminTokenResponseSchema,
  type AccountAdminToken,
  type AdminService,
} from "../gen/licensing/admin/v1/admin_pb.js";
import { generateApiKey, hashApiKey } from "../licensing/api-keys.js";
import type { Logger } from "../logger.js";
import { invalidArgument, notFound } from "../server/errors.js";
import type { UnaryHandlers } from "../server/rpc.js";
import type { AdminTokensTable, Database } from "../store/schema.js";
import { requireOperator, type AdminAuthorize } from "./scope.js";
import { optionalTimestamp, timestamp } from "./convert.js";
import { defaultId } from "./keys.js";
import { SLUG } from "../rules/validate.js";

export const ADMIN_TOKEN_SCHEME = "lk_adm_";
const PREFIX_LENGTH = 12;
const SHAPE = /^lk_adm_[0-9A-Za-z]{43}$/;

export interface GeneratedAdminToken {
  readonly secret: string;
  readonly prefix: string;
  /** Lower-case hex SHA-256 of the secret. */
  readonly hash: string;
}

/** A new random account admin token. */
export function generateAdminToken(): GeneratedAdminToken {
  // The body of an API key is 43 base62 characters of 32 CSPRNG bytes; reuse it under our scheme.
  const secret = ADMIN_TOKEN_SCHEME + generateApiKey().secret.slice("lk_live_".length);
  return { secret, prefix: secret.slice(0, PREFIX_LENGTH), hash: hashApiKey(secret) };
}

/** True if `s` has the shape of an account admin token (says nothing of validity). */
export function looksLikeAdminToken(s: string): boolean {
  return SHAPE.test(s);
}

/** The account a live (unrevoked) token administers, or undefined. */
export async function findAdminTokenAccount(db: Kysely<Database>, secretHash: string): Promise<string | undefined> {
  const row = await db
    .selectFrom("admin_tokens")
    .select("account_id")
    .where("secret_hash", "=", secretHash)
    .where("revoked_at", "is", null)
    .executeTakeFirst();
  return row?.account_id;
}

export interface AccountTokenAdminDeps {
  readonly db: Kysely<Database>;
  readonly authorize: AdminAuthorize;
  /** Drops a revoked token from this replica's cache at once (others: within their cache time). */
  readonly onTokenRevoked: (secretHash: string) => void;
  /** Epoch ms. */
  readonly now: () => number;
  readonly logger: Logger;
}

type AccountTokenHandlers = Pick<
  UnaryHandlers<typeof AdminService>,
  "createAccountAdminToken" | "listAccountAdminTokens" | "revokeAccountAdminToken"
>;

export function createAccountTokenAdminHandlers(deps: AccountTokenAdminDeps): AccountTokenHandlers {
  const { db } = deps;
  return {
    async createAccountAdminToken(request, context) {
      requireOperator(await deps.authorize(context));
      if (request.accountId === "") throw invalidArgument("account_id", "required");
      const id = request.id === "" ? defaultId(request.accountId) : request.id;
      if (!SLUG.regex.test(id)) throw invalidArgument("id", SLUG.message);
      const account = await db.selectFrom("accounts").select("id").where("id", "=", request.accountId).executeTakeFirst();
      if (account === undefined) throw notFound(`account "${request.accountId}" does not exist`);
      const token = generateAdminToken();
      const row = await db
        .insertInto("admin_tokens")
        .values({ id, account_id: request.accountId, prefix: token.prefix, secret_hash: token.hash, created_at: new Date(deps.now()) })
        .onConflict((oc) => oc.column("id").doNothing())
        .returningAll()
        .executeTakeFirst();
      if (row === undefined) throw new ConnectError(`admin token "${id}" already exists`, Code.AlreadyExists);
      deps.logger.info({ tokenId: id, accountId: request.accountId, prefix: token.prefix }, "account admin token created");
      return create(CreateAccountAdminTokenResponseSchema, { token: toMessage(row), secret: token.secret });
    },

    async listAccountAdminTokens(request, context) {
      requireOperator(await deps.authorize(context));
      let query = db.selectFrom("admin_tokens").selectAll().orderBy("id");
      if (request.accountId !== "") query = query.where("account_id", "=", request.accountId);
      const rows = await query.execute();
      return create(ListAccountAdminTokensResponseSchema, { tokens: rows.map(toMessage) });
    },

    async revokeAccountAdminToken(request, context) {
      requireOperator(await deps.authorize(context));
      if (request.id === "") throw invalidArgument("id", "required");
      // coalesce: a second revocation keeps the first time.
      const row = await db
        .updateTable("admin_tokens")
        .set((eb) => ({ revoked_at: eb.fn.coalesce("revoked_at", eb.val(new Date(deps.now()))) }))
        .where("id", "=", request.id)
        .returningAll()
        .executeTakeFirst();
      if (row === undefined) throw notFound(`admin token "${request.id}" does not exist`);
      deps.onTokenRevoked(row.secret_hash);
      deps.logger.info({ tokenId: row.id, accountId: row.account_id }, "account admin token revoked");
      return create(RevokeAccountAdminTokenResponseSchema, { token: toMessage(row) });
    },
  };
}

function toMessage(row: Selectable<AdminTokensTable>): AccountAdminToken {
  return create(AccountAdminTokenSchema, {
    id: row.id,
    accountId: row.account_id,
    prefix: row.prefix,
    createdAt: timestamp(row.created_at),
    revokedAt: optionalTimestamp(row.revoked_at),
  });
}
