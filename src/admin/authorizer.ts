/**
 * Authorization for AdminService: who is calling, per call.
 *
 *   - `authorization: Bearer <ADMIN_TOKEN>`: the operator, who may call everything. Compared
 *     in constant time by the existing `createAdminAuthenticator`.
 *   - `authorization: Bearer lk_adm_…`: an account admin token, looked up by its SHA-256 in
 *     `admin_tokens`; the caller administers that account only (see scope.ts).
 *   - Anything else (no header, another scheme, an API key, a service token, garbage, a revoked
 *     token): UNAUTHENTICATED. Data-plane credentials are never admin credentials.
 *
 * Account tokens are cached (hit and miss) for `cacheTtlMs`, so `authorize` is synchronous for
 * the operator and for a token seen recently; concurrent lookups of one token share one query.
 * A revocation takes effect at once on the replica that made it (`invalidate`) and within
 * `cacheTtlMs` on the others.
 */
import { Code, ConnectError } from "@connectrpc/connect";
import type { Kysely } from "kysely";
import { hashApiKey } from "../licensing/api-keys.js";
import { unauthenticated, unavailable } from "../server/errors.js";
import type { RpcContext } from "../server/rpc.js";
import type { Database } from "../store/schema.js";
import { createAdminAuthenticator, type AdminAuthenticator } from "./admin-auth.js";
import { findAdminTokenAccount, looksLikeAdminToken } from "./account-tokens.js";
import { OPERATOR, permissionDenied, type AdminCaller, type AdminAuthorize } from "./scope.js";

export interface AdminAuthorizerOptions {
  /** The operator's token (ADMIN_TOKEN); undefined: only account tokens are accepted. */
  readonly adminToken: string | undefined;
  readonly db: Kysely<Database>;
  /** Epoch ms. */
  readonly now: () => number;
  /** How long a token's lookup (found or not) is reused, ms. Default 5000. */
  readonly cacheTtlMs?: number;
  /** Most cached lookups; the cache is emptied when full. Default 10000. */
  readonly cacheMax?: number;
  readonly logger: { warn(obj: object, msg: string): void };
}

export interface AdminAuthorizer {
  /** The caller of this call; throws UNAUTHENTICATED (or UNAVAILABLE when the lookup fails). */
  readonly authorize: AdminAuthorize;
  /**
   * For the operator-only handlers that take an `AdminAuthenticator` (Apply, Export, licence
   * tokens, signing keys): passes the operator; an account token's shape is PERMISSION_DENIED
   * (without a lookup, so it stays synchronous); anything else UNAUTHENTICATED.
   */
  readonly operatorOnly: AdminAuthenticator;
  /** Forgets a token (by secret hash) so its revocation applies on this replica at once. */
  invalidate(secretHash: string): void;
}

const DEFAULT_CACHE_TTL_MS = 5000;
const DEFAULT_CACHE_MAX = 10_000;

interface CachedLookup {
  /** The account, or undefined for an unknown or revoked token. */
  readonly accountId: string | undefined;
  readonly untilMs: number;
}

export function createAdminAuthorizer(options: AdminAuthorizerOptions): AdminAuthorizer {
  const ttlMs = options.cacheTtlMs ?? DEFAULT_CACHE_TTL_MS;
  const cacheMax = options.cacheMax ?? DEFAULT_CACHE_MAX;
  const operator = options.adminToken === undefined ? undefined : createAdminAuthenticator(options.adminToken);
  const cache = new Map<string, CachedLookup>();
  const pending = new Map<string, Promise<string | undefined>>();

  function bearer(context: RpcContext): string {
    const header = context.header("authorization");
    const match = header === undefined ? null : /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (match?.[1] === undefined) throw unauthenticated("admin calls need the header authorization: Bearer <admin token>");
    return match[1];
  }

  function isOperator(context: RpcContext): boolean {
    if (operator === undefined) return false;
    try {
      operator(context);
      return true;
    } catch {
      return false; // not the operator's token: it may still be an account token
    }
  }

  function lookup(hash: string): Promise<string | undefined> {
    const inFlight = pending.get(hash);
    if (inFlight !== undefined) return inFlight;
    const load = findAdminTokenAccount(options.db, hash).then(
      (accountId) => {
        pending.delete(hash);
        if (cache.size >= cacheMax) cache.clear();
        cache.set(hash, { accountId, untilMs: options.now() + ttlMs });
        return accountId;
      },
      (error: unknown) => {
        pending.delete(hash); // failures are never cached
        options.logger.warn({ err: error }, "could not look up an account admin token");
        throw unavailable("cannot check the admin token now: retry shortly", error);
      },
    );
    pending.set(hash, load);
    return load;
  }

  function accountCaller(accountId: string | undefined): AdminCaller {
    if (accountId === undefined) throw unauthenticated("the admin token is not valid");
    return { operator: false, accountId };
  }

  const authorize: AdminAuthorize = (context) => {
    const token = bearer(context);
    if (isOperator(context)) return OPERATOR;
    if (!looksLikeAdminToken(token)) {
      throw unauthenticated(operator === undefined ? "the operator admin API is disabled and this is not an account admin token" : "the admin token is not valid");
    }
    const hash = hashApiKey(token);
    const cached = cache.get(hash);
    if (cached !== undefined && cached.untilMs > options.now()) return accountCaller(cached.accountId);
    return lookup(hash).then(accountCaller);
  };

  const operatorOnly: AdminAuthenticator = (context) => {
    const token = bearer(context);
    if (isOperator(context)) return;
    if (looksLikeAdminToken(token)) throw permissionDenied("this call needs the operator's admin token; account admin tokens may not make it");
    throw new ConnectError("the admin token is not valid", Code.Unauthenticated);
  };

  return {
    authorize,
    operatorOnly,
    invalidate: (hash) => {
      cache.delete(hash);
    },
  };
}
