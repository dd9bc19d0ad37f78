/**
 * AdminService handlers for licence tokens and their signing keys: IssueLicenseToken,
 * RotateSigningKey, ListSigningKeys, RetireSigningKey. Bound by the admin binding next to Apply
 * and Export (`bindService(AdminService, { ...rules, ...createTokenAdminHandlers(deps) })`).
 *
 * Every call is authorized first. Tokens are never logged (only licence, kid and expiry); after
 * a key change `onSigningKeysChanged` runs so this replica's verifier reloads at once (the
 * others hear `licensing_changes` "signing_keys").
 */
import { create } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import {
  IssueLicenseTokenResponseSchema,
  ListSigningKeysResponseSchema,
  RetireSigningKeyResponseSchema,
  RotateSigningKeyResponseSchema,
  SigningKeySchema,
  type AdminService,
} from "../gen/licensing/admin/v1/admin_pb.js";
import { issueLicenseToken, MAX_LICENSE_TOKEN_TTL_SECONDS, DEFAULT_LICENSE_TOKEN_TTL_SECONDS } from "../licensing/credentials/license-tokens.js";
import { listSigningKeys, retireSigningKey, rotateSigningKey } from "../licensing/credentials/signing-keys.js";
import type { Logger } from "../logger.js";
import { invalidArgument, notFound } from "../server/errors.js";
import type { UnaryHandlers } from "../server/rpc.js";
import type { Database } from "../store/schema.js";
import type { AdminAuthenticator } from "./admin-auth.js";

export interface TokenAdminDeps {
  readonly db: Kysely<Database>;
  readonly authenticate: AdminAuthenticator;
  /**
   * The 32-byte key-encryption key of the signing keys (SIGNING_SECRET, or DATA_DIR/signing-secret
   * in embedded mode). Undefined: licence tokens are disabled and these calls answer
   * FAILED_PRECONDITION (ListSigningKeys and RetireSigningKey still work: they need no secret).
   */
  readonly signingSecret: Uint8Array | undefined;
  /** Runs after a key is created or retired; may return a promise (awaited before answering). */
  readonly onSigningKeysChanged: () => void | Promise<void>;
  /** Epoch ms. */
  readonly now: () => number;
  readonly logger: Logger;
}

type TokenHandlers = Pick<
  UnaryHandlers<typeof AdminService>,
  "issueLicenseToken" | "rotateSigningKey" | "listSigningKeys" | "retireSigningKey"
>;

export function createTokenAdminHandlers(deps: TokenAdminDeps): TokenHandlers {
  function secret(): Uint8Array {
    if (deps.signingSecret === undefined) {
      // FAILED_PRECONDITION: the server's configuration, not the request, must change.
      throw new ConnectError("licence tokens are disabled: set SIGNING_SECRET on the service", Code.FailedPrecondition);
    }
    return deps.signingSecret;
  }

  return {
    async issueLicenseToken(request, context) {
      deps.authenticate(context);
      if (request.licenseId === "") throw invalidArgument("license_id", "required");
      const ttlSeconds = checkTtl(request.ttlSeconds);
      const issued = await issueLicenseToken(deps.db, secret(), {
        licenseId: request.licenseId,
        ttlSeconds,
        now: new Date(deps.now()),
      });
      if (issued === undefined) throw notFound(`license "${request.licenseId}" does not exist`);
      deps.logger.info({ licenseId: request.licenseId, kid: issued.kid, expiresAt: issued.expiresAt.toISOString() }, "licence token issued");
      return create(IssueLicenseTokenResponseSchema, {
        token: issued.token,
        expiresAt: timestampFromDate(issued.expiresAt),
        kid: issued.kid,
      });
    },

    async rotateSigningKey(_request, context) {
      deps.authenticate(context);
      const { kid } = await rotateSigningKey(deps.db, secret(), { now: new Date(deps.now()) });
      await deps.onSigningKeysChanged();
      deps.logger.info({ kid }, "signing key rotated");
      return create(RotateSigningKeyResponseSchema, { kid });
    },

    async listSigningKeys(_request, context) {
      deps.authenticate(context);
      const keys = await listSigningKeys(deps.db);
      return create(ListSigningKeysResponseSchema, {
        keys: keys.map((key) =>
          create(SigningKeySchema, {
            kid: key.kid,
            createdAt: timestampFromDate(key.createdAt),
            ...(key.activatedAt === null ? {} : { activatedAt: timestampFromDate(key.activatedAt) }),
            ...(key.retiredAt === null ? {} : { retiredAt: timestampFromDate(key.retiredAt) }),
          }),
        ),
      });
    },

    async retireSigningKey(request, context) {
      deps.authenticate(context);
      if (request.kid === "") throw invalidArgument("kid", "required");
      const found = await retireSigningKey(deps.db, request.kid, new Date(deps.now()));
      if (!found) throw notFound(`no signing key has kid "${request.kid}"`);
      await deps.onSigningKeysChanged();
      deps.logger.info({ kid: request.kid }, "signing key retired");
      return create(RetireSigningKeyResponseSchema, {});
    },
  };
}

/** ttl_seconds as a number: 0 means the default; negative or above 30 days is refused. */
function checkTtl(ttlSeconds: bigint): number {
  if (ttlSeconds < 0n || ttlSeconds > BigInt(MAX_LICENSE_TOKEN_TTL_SECONDS)) {
    throw invalidArgument(
      "ttl_seconds",
      `must be from 1 to ${MAX_LICENSE_TOKEN_TTL_SECONDS} (30 days), or 0 for the default (${DEFAULT_LICENSE_TOKEN_TTL_SECONDS})`,
    );
  }
  return Number(ttlSeconds);
}
