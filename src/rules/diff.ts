/**
 * The difference between two normalized rules documents: what Apply must create, update and
 * delete, and which licences' versions must grow. Pure: no I/O, no clock, plain objects in and
 * out, so it is unit-tested without a database and shared by Apply and its dry run.
 */
import { compareStrings } from "./checker.js";
import type { EntitlementKind, EntitlementRule, LicenseRule, RulesDocument } from "./types.js";

export type ChangeKind = "account" | "plan" | "license" | "api_key" | "issuer" | "service_token" | "route";
export type ChangeAction = "create" | "update" | "delete";

export interface Change {
  readonly kind: ChangeKind;
  /** The object's id (for plans, the plan name). */
  readonly id: string;
  readonly action: ChangeAction;
  /** For updates, the top-level document fields that differ, in document order; else []. */
  readonly fields: string[];
}

export interface RulesDiff {
  /**
   * In an order that respects foreign keys: creates and updates of accounts, plans, licences,
   * API keys, issuers, then service tokens; then deletes in the reverse order. By id within a
   * kind. (Issuers and service tokens reference nothing; they come last so the order of the
   * older kinds is unchanged.)
   */
  readonly changes: Change[];
  /**
   * Licences that exist before and after and whose version must grow by one: those updated,
   * those whose keys were created, updated or deleted, and every licence on a plan whose
   * entitlements changed. Sorted; each at most once, however many reasons apply.
   */
  readonly versionBumps: string[];
}

export interface DiffOptions {
  /** Delete what `current` has and `desired` does not declare. */
  readonly prune: boolean;
}

/** The comparable fields of each kind, in document order. */
const FIELDS = {
  account: ["name"],
  plan: ["description", "entitlements"],
  license: ["account", "plan", "status", "valid_from", "valid_until", "environments", "overrides"],
  api_key: ["license", "scopes", "expires_at", "revoked"],
  issuer: [
    "issuer", "jwks_url", "audiences", "algorithms", "leeway_seconds", "license_claim", "account_claim", "roles_claim",
  ],
  service_token: ["rights", "expires_at", "revoked"],
  route: ["method", "path_prefix", "feature", "cost"],
} as const satisfies Record<ChangeKind, readonly string[]>;

const WRITE_ORDER: readonly ChangeKind[] = ["account", "plan", "license", "api_key", "issuer", "service_token", "route"];

/** What turns `current` into `desired`; both must be normalized (see types.ts). */
export function diffRules(current: RulesDocument, desired: RulesDocument, options: DiffOptions): RulesDiff {
  const byKind: Record<ChangeKind, Change[]> = {
    account: diffCollection("account", current.accounts, desired.accounts, (a) => a.id, options),
    plan: diffCollection("plan", current.plans, desired.plans, (p) => p.name, options),
    license: diffCollection("license", current.licenses, desired.licenses, (l) => l.id, options),
    api_key: diffCollection("api_key", current.api_keys, desired.api_keys, (k) => k.id, options),
    issuer: diffCollection("issuer", current.issuers, desired.issuers, (i) => i.id, options),
    service_token: diffCollection("service_token", current.service_tokens, desired.service_tokens, (t) => t.id, options),
    route: diffCollection("route", current.routes, desired.routes, (r) => r.id, options),
  };
  const all = WRITE_ORDER.flatMap((kind) => byKind[kind]);
  const changes = [
    ...all.filter((c) => c.action !== "delete"),
    ...[...WRITE_ORDER].reverse().flatMap((kind) => byKind[kind].filter((c) => c.action === "delete")),
  ];
  return { changes, versionBumps: versionBumps(current, desired, changes, options) };
}

/** What identifies an entitlement within its plan or licence: a feature may carry one limit per kind. */
export interface EntitlementKey {
  readonly feature: string;
  readonly kind: EntitlementKind;
}

/** Per-(feature, kind) differences between two sorted entitlement lists (of one plan or licence). */
export interface EntitlementsDiff {
  readonly insert: EntitlementRule[];
  readonly update: EntitlementRule[];
  /** (feature, kind) pairs to delete. */
  readonly remove: EntitlementKey[];
}

export function diffEntitlements(
  current: readonly EntitlementRule[],
  desired: readonly EntitlementRule[],
): EntitlementsDiff {
  const before = new Map(current.map((e) => [entitlementKey(e), e]));
  const after = new Set(desired.map(entitlementKey));
  return {
    insert: desired.filter((e) => !before.has(entitlementKey(e))),
    update: desired.filter((e) => {
      const old = before.get(entitlementKey(e));
      return old !== undefined && !deepEqual(old, e);
    }),
    remove: current.filter((e) => !after.has(entitlementKey(e))).map(({ feature, kind }) => ({ feature, kind })),
  };
}

/** A string that is equal for two entitlements exactly when their (feature, kind) is. */
export function entitlementKey(e: EntitlementKey): string {
  // NUL cannot occur in a feature key, so the pair is unambiguous.
  return `${e.feature}\u0000${e.kind}`;
}

function diffCollection<K extends ChangeKind, T extends object>(
  kind: K,
  current: readonly T[],
  desired: readonly T[],
  idOf: (item: T) => string,
  options: DiffOptions,
): Change[] {
  const before = new Map(current.map((item) => [idOf(item), item]));
  const declared = new Set(desired.map(idOf));
  const changes: Change[] = [];
  for (const item of desired) {
    const old = before.get(idOf(item));
    if (old === undefined) {
      changes.push({ kind, id: idOf(item), action: "create", fields: [] });
      continue;
    }
    const fields = FIELDS[kind].filter((f) => !deepEqual(fieldOf(old, f), fieldOf(item, f)));
    if (fields.length > 0) changes.push({ kind, id: idOf(item), action: "update", fields });
  }
  if (options.prune) {
    for (const item of current) {
      if (!declared.has(idOf(item))) changes.push({ kind, id: idOf(item), action: "delete", fields: [] });
    }
  }
  return changes.sort((a, b) => compareStrings(a.id, b.id));
}

function fieldOf(item: object, name: string): unknown {
  return (item as Record<string, unknown>)[name];
}

function versionBumps(
  current: RulesDocument,
  desired: RulesDocument,
  changes: readonly Change[],
  options: DiffOptions,
): string[] {
  const surviving = survivingLicenses(current, desired, options);
  const bumps = new Set<string>();
  const bump = (id: string | undefined): void => {
    if (id !== undefined && surviving.has(id)) bumps.add(id);
  };
  const currentKeys = new Map(current.api_keys.map((k) => [k.id, k]));
  const desiredKeys = new Map(desired.api_keys.map((k) => [k.id, k]));
  for (const change of changes) {
    if (change.kind === "license" && change.action === "update") bump(change.id);
    if (change.kind === "api_key") {
      bump(currentKeys.get(change.id)?.license);
      bump(desiredKeys.get(change.id)?.license);
    }
    if (change.kind === "plan" && change.action === "update" && change.fields.includes("entitlements")) {
      for (const [id, license] of surviving) if (license.plan === change.id) bump(id);
    }
  }
  return [...bumps].sort(compareStrings);
}

/**
 * Licences that exist now and will still exist after the apply, with their plan afterwards:
 * the declared ones as declared, plus (without prune) the undeclared ones as they are.
 */
function survivingLicenses(
  current: RulesDocument,
  desired: RulesDocument,
  options: DiffOptions,
): Map<string, LicenseRule> {
  const existing = new Set(current.licenses.map((l) => l.id));
  const surviving = new Map<string, LicenseRule>();
  if (!options.prune) for (const license of current.licenses) surviving.set(license.id, license);
  for (const license of desired.licenses) if (existing.has(license.id)) surviving.set(license.id, license);
  return surviving;
}

/**
 * Structural equality of plain data (strings, numbers, booleans, arrays, objects). A property
 * whose value is undefined counts as absent, so `{ a: undefined }` equals `{}`; object key
 * order does not matter (jsonb does not keep it), array order does (normalized lists are sorted).
 */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (Array.isArray(a) || Array.isArray(b)) {
    return Array.isArray(a) && Array.isArray(b) && a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  const keys = new Set([...Object.keys(ra), ...Object.keys(rb)]);
  for (const key of keys) if (!deepEqual(ra[key], rb[key])) return false;
  return true;
}
