/**
 * Who is calling AdminService, and what that caller may see.
 *
 * The operator (ADMIN_TOKEN) sees everything. An account admin token sees one account: objects
 * of other accounts answer NOT_FOUND, exactly as if they did not exist (so a token cannot probe
 * for other customers' ids); a filter that names another account, and operator-only RPCs,
 * answer PERMISSION_DENIED.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { RpcContext } from "../server/rpc.js";

export type AdminCaller =
  | { readonly operator: true; readonly accountId?: undefined }
  | { readonly operator: false; readonly accountId: string };

/** Resolves the caller of one call; throws UNAUTHENTICATED. Sync when the answer is cached. */
export type AdminAuthorize = (context: RpcContext) => AdminCaller | Promise<AdminCaller>;

export const OPERATOR: AdminCaller = Object.freeze({ operator: true });

export function permissionDenied(message: string): ConnectError {
  return new ConnectError(message, Code.PermissionDenied);
}

/** Throws PERMISSION_DENIED unless the caller is the operator. */
export function requireOperator(caller: AdminCaller): void {
  if (!caller.operator) throw permissionDenied("this call needs the operator's admin token; account admin tokens may not make it");
}

/**
 * The account filter a list call runs with: the caller's own account for account tokens (a
 * request naming another one is PERMISSION_DENIED), the requested one (or none) for the operator.
 */
export function accountFilter(caller: AdminCaller, requested: string): string | undefined {
  if (caller.operator) return requested === "" ? undefined : requested;
  if (requested !== "" && requested !== caller.accountId) {
    throw permissionDenied(`this admin token administers account "${caller.accountId}" only`);
  }
  return caller.accountId;
}

/** True when the caller may see an object of `accountId`. */
export function canSee(caller: AdminCaller, accountId: string): boolean {
  return caller.operator || caller.accountId === accountId;
}
