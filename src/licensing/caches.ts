/**
 * The hot path's in-memory view of Postgres (API keys, licence snapshots, accounts' licences)
 * and how a change notification drops exactly what changed.
 *
 * Payloads (see migration 20261121010000): "license:<id>", "plan:<name>", "key:<secret_hash>",
 * "service_token:<hash>", "issuers", "signing_keys", "routes". Unknown payloads drop everything: a
 * newer replica's notification must never leave stale data here.
 */
import type { Kysely } from "kysely";
import type { Database } from "../store/schema.js";
import { loadScaledLicenseSnapshot } from "../scaling/capacity-snapshot.js";
import { findAccountLicense, findApiKeyByHash } from "../store/licenses.js";
import { createLoadingCache, type LoadingCache } from "./loading-cache.js";
import type { ApiKeyRecord, LicenseSnapshot } from "./snapshot.js";

export interface LicensingCaches {
  readonly keys: LoadingCache<string, ApiKeyRecord>;
  readonly licenses: LoadingCache<string, LicenseSnapshot>;
  readonly accountLicenses: LoadingCache<string, string>;
  /** Drops what a licensing_changes payload names. */
  onChange(payload: string): void;
  /** Drops everything (after a reconnect, notifications may have been missed). */
  invalidateAll(): void;
}

export interface CachesOptions {
  readonly db: Kysely<Database>;
  readonly now: () => number;
  /** How long an unknown API key is remembered as unknown, in ms. */
  readonly unknownKeyCacheMs: number;
  /** Called for payloads these caches do not hold (issuers, signing keys, service tokens). */
  readonly onOtherChange?: (payload: string) => void;
}

export function createLicensingCaches(options: CachesOptions): LicensingCaches {
  const { db, now } = options;
  const keys = createLoadingCache<string, ApiKeyRecord>({
    load: (hash) => findApiKeyByHash(db, hash),
    negativeTtlMs: options.unknownKeyCacheMs,
    now,
  });
  // Capacity entitlements carry the units Scale holds now, not the rules' initial limit.
  const licenses = createLoadingCache<string, LicenseSnapshot>({ load: (id) => loadScaledLicenseSnapshot(db, id), negativeTtlMs: 0, now });
  const accountLicenses = createLoadingCache<string, string>({ load: (id) => findAccountLicense(db, id), negativeTtlMs: 0, now });

  function invalidateAll(): void {
    keys.invalidateAll();
    licenses.invalidateAll();
    accountLicenses.invalidateAll();
  }

  function onChange(payload: string): void {
    const colon = payload.indexOf(":");
    const kind = colon === -1 ? payload : payload.slice(0, colon);
    const subject = colon === -1 ? "" : payload.slice(colon + 1);
    switch (kind) {
      case "license":
        licenses.invalidate(subject);
        // Which account a licence belongs to, and whether it is active, may have changed.
        accountLicenses.invalidateAll();
        return;
      case "plan":
        // Snapshots are keyed by licence; a plan change reaches every licence on the plan.
        licenses.invalidateAll();
        return;
      case "key":
        keys.invalidate(subject);
        return;
      case "service_token":
      case "issuers":
      case "signing_keys":
      case "routes":
        options.onOtherChange?.(payload);
        return;
      default:
        invalidateAll();
        options.onOtherChange?.(payload);
    }
  }

  return { keys, licenses, accountLicenses, onChange, invalidateAll };
}
