/**
 * Authorization for AdminService: the caller presents `authorization: Bearer <ADMIN_TOKEN>`.
 * The comparison is constant-time (over SHA-256 digests, so the token's length leaks nothing
 * either), and a service without a token refuses every admin call.
 */
import { createHash, timingSafeEqual } from "node:crypto";
import { unauthenticated } from "../server/errors.js";
import type { RpcContext } from "../server/rpc.js";

export type AdminAuthenticator = (context: RpcContext) => void;

/** Returns a check that throws UNAUTHENTICATED unless the call carries the admin token. */
export function createAdminAuthenticator(adminToken: string | undefined): AdminAuthenticator {
  const expected = adminToken === undefined ? undefined : digest(adminToken);
  return (context) => {
    if (expected === undefined) {
      throw unauthenticated("the admin API is disabled: set ADMIN_TOKEN on the service");
    }
    const header = context.header("authorization");
    const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (match?.[1] === undefined) {
      throw unauthenticated("admin calls need the header authorization: Bearer <admin token>");
    }
    if (!timingSafeEqual(digest(match[1]), expected)) {
      throw unauthenticated("the admin token is not valid");
    }
  };
}

function digest(token: string): Buffer {
  return createHash("sha256").update(token, "utf8").digest();
}
