/**
 * Validation of a parsed rules document: structure, per-kind entitlement rules, duplicates and
 * cross-references, all in one pass that reports every problem.
 *
 * Cross-references resolve within the document only (a licence's plan must be declared in the
 * same document, even if it already exists in the database): the document is the whole desired
 * state, which is what makes `prune` and export → apply round trips safe.
 */
import { at, Checker, compareStrings, field, index, type Mapping, type Pattern } from "./checker.js";
import type { RuleIssue } from "./errors.js";
import {
  ENTITLEMENT_KINDS,
  FAILURE_MODES,
  ISSUER_DEFAULTS,
  JWT_ALGORITHMS,
  LICENSE_STATUSES,
  MAX_LEEWAY_SECONDS,
  OVERAGE_POLICIES,
  RULES_VERSION,
  SERVICE_TOKEN_RIGHTS,
  type AccountRule,
  AUTO_SCALING_SOURCES,
  type ApiKeyRule,
  type AutoScalingRule,
  type EntitlementPeriod,
  type EntitlementRule,
  type IssuerRule,
  type LicenseRule,
  type PlanRule,
  type RulesDocument,
  type ScalingRule,
  type RouteRule,
  type ServiceTokenRule,
} from "./types.js";
import { entitlementKey } from "./diff.js";
import { checkKindRules } from "./kind-rules.js";

export type ValidationResult =
  | { readonly ok: true; readonly document: RulesDocument }
  | { readonly ok: false; readonly issues: readonly RuleIssue[] };

export const SLUG: Pattern = {
  regex: /^[a-z0-9][a-z0-9._-]{0,62}$/,
  message: 'must be a slug: lower-case letters, digits, ".", "_" or "-", starting with a letter or digit, at most 63 characters',
};
export const FEATURE_KEY: Pattern = {
  regex: /^[a-zA-Z0-9][a-zA-Z0-9._:/-]{0,127}$/,
  message: 'must be a feature key: letters, digits, ".", "_", ":", "/" or "-", starting with a letter or digit, at most 128 characters',
};
/** Roles, scopes and environment names share the feature-key alphabet. */
export const NAME: Pattern = {
  regex: /^[a-zA-Z0-9][a-zA-Z0-9._:/-]{0,127}$/,
  message: 'must be a name: letters, digits, ".", "_", ":", "/" or "-", starting with a letter or digit, at most 128 characters',
};
const DISPLAY_TEXT: Pattern = { regex: /^[^\n\r]{1,200}$/u, message: "must be 1 to 200 characters on one line" };
const DESCRIPTION: Pattern = { regex: /^[\s\S]{0,2000}$/u, message: "must be at most 2000 characters" };
/** An `iss` value: any StringOrURI without whitespace. */
const ISSUER: Pattern = { regex: /^\S{1,2048}$/u, message: "must be 1 to 2048 characters without spaces" };
/** An `aud` value: often a URL, so wider than NAME. */
const AUDIENCE: Pattern = { regex: /^\S{1,512}$/u, message: "must be 1 to 512 characters without spaces" };
/** A claim name: plain ("roles"), namespaced ("https://acme.example/roles") or a dotted path. */
const CLAIM: Pattern = { regex: /^\S{1,256}$/u, message: "must be a claim name: 1 to 256 characters without spaces" };

const ROOT_KEYS = ["version", "accounts", "plans", "licenses", "api_keys", "issuers", "service_tokens", "routes"] as const;
const ACCOUNT_KEYS = ["id", "name"] as const;
const PLAN_KEYS = ["name", "description", "entitlements"] as const;
const LICENSE_KEYS = ["id", "account", "plan", "status", "valid_from", "valid_until", "environments", "overrides"] as const;
const API_KEY_KEYS = ["id", "license", "scopes", "expires_at", "revoked"] as const;
const ISSUER_KEYS = [
  "id", "issuer", "jwks_url", "audiences", "algorithms", "leeway_seconds", "license_claim", "account_claim", "roles_claim",
] as const;
const SERVICE_TOKEN_KEYS = ["id", "rights", "expires_at", "revoked"] as const;
const ROUTE_KEYS = ["id", "method", "path_prefix", "feature", "cost"] as const;
const HTTP_METHOD: Pattern = { regex: /^[A-Z]{1,16}$/, message: "must be an HTTP method in upper case, e.g. GET or POST" };
const PATH_PREFIX: Pattern = {
  regex: /^\/[\x21-\x7e]{0,1023}$/,
  message: 'must start with "/" and contain only visible ASCII, at most 1024 characters',
};
const ENTITLEMENT_KEYS = [
  "feature", "kind", "limit", "period", "burst", "overage", "failure_mode", "unit_price", "roles", "scaling",
] as const;
const SCALING_KEYS = [
  "min", "max", "step", "target_utilization", "scale_up_cooldown_seconds", "scale_down_cooldown_seconds",
  "budget_per_period", "scale_up_threshold", "scale_down_threshold", "auto",
] as const;
const AUTO_KEYS = ["source", "quota_feature", "horizon_seconds"] as const;

/**
 * Checks `input` (any parsed value) against the rules format. On success the document is
 * normalized (defaults filled, lists sorted, times canonical; see types.ts); on failure every
 * issue is returned in document order. Never throws.
 */
export function validateRules(input: unknown): ValidationResult {
  const checker = new Checker();
  const document = readDocument(checker, input);
  if (checker.issues.length > 0 || document === undefined) {
    return { ok: false, issues: checker.issues };
  }
  return { ok: true, document };
}

function readDocument(c: Checker, input: unknown): RulesDocument | undefined {
  const root = c.mapping(input, "", ROOT_KEYS);
  if (root === undefined) return undefined;
  readVersion(c, root);
  const accounts = readItems(c, root, "accounts", readAccount);
  const plans = readItems(c, root, "plans", readPlan);
  const licenses = readItems(c, root, "licenses", readLicense);
  const apiKeys = readItems(c, root, "api_keys", readApiKey);
  const issuers = readItems(c, root, "issuers", readIssuer);
  const serviceTokens = readItems(c, root, "service_tokens", readServiceToken);
  const routes = readItems(c, root, "routes", readRoute);

  checkUnique(c, accounts, (a) => a.id, "id");
  checkUnique(c, plans, (p) => p.name, "name");
  checkUnique(c, licenses, (l) => l.id, "id");
  checkUnique(c, apiKeys, (k) => k.id, "id");
  checkUnique(c, issuers, (i) => i.id, "id");
  checkUnique(c, issuers, (i) => i.issuer, "issuer");
  checkUnique(c, serviceTokens, (t) => t.id, "id");
  checkUnique(c, routes, (r) => r.id, "id");
  checkUnique(c, routes, (r) => `${r.method ?? "*"} ${r.path_prefix}`, "path_prefix");
  checkLicenseReferences(c, licenses, accounts, plans);
  checkKeyReferences(c, apiKeys, licenses);

  return {
    version: RULES_VERSION,
    accounts: sortedBy(accounts, (a) => a.id),
    plans: sortedBy(plans, (p) => p.name),
    licenses: sortedBy(licenses, (l) => l.id),
    api_keys: sortedBy(apiKeys, (k) => k.id),
    issuers: sortedBy(issuers, (i) => i.id),
    service_tokens: sortedBy(serviceTokens, (t) => t.id),
    routes: sortedBy(routes, (r) => r.id),
  };
}

function readVersion(c: Checker, root: Mapping): void {
  const version = field(root, "version");
  if (version === undefined) c.report("version", "required");
  else if (version !== RULES_VERSION && version !== BigInt(RULES_VERSION)) {
    c.report("version", `must be ${RULES_VERSION} (the only version this service reads)`);
  }
}

/** Reads a top-level list; items that are not mappings are reported and skipped. */
function readItems<T>(
  c: Checker,
  root: Mapping,
  key: string,
  read: (c: Checker, m: Mapping, path: string) => T,
): Array<{ rule: T; path: string }> {
  return readMappings(c, field(root, key), key, itemKeys(key)).map(({ m, path }) => ({
    rule: read(c, m, path),
    path,
  }));
}

function itemKeys(listKey: string): readonly string[] {
  switch (listKey) {
    case "accounts": return ACCOUNT_KEYS;
    case "plans": return PLAN_KEYS;
    case "licenses": return LICENSE_KEYS;
    case "issuers": return ISSUER_KEYS;
    case "service_tokens": return SERVICE_TOKEN_KEYS;
    case "routes": return ROUTE_KEYS;
    default: return API_KEY_KEYS;
  }
}

function readMappings(
  c: Checker,
  value: unknown,
  path: string,
  keys: readonly string[],
): Array<{ m: Mapping; path: string }> {
  const out: Array<{ m: Mapping; path: string }> = [];
  (c.list(value, path) ?? []).forEach((item, i) => {
    const m = c.mapping(item, index(path, i), keys);
    if (m !== undefined) out.push({ m, path: index(path, i) });
  });
  return out;
}

// Item readers return a rule even when some fields are wrong (with "" for a missing id), so that
// one bad field does not also produce "unknown account" errors further down the document.

function readAccount(c: Checker, m: Mapping, path: string): AccountRule {
  return {
    id: c.string(m, "id", path, { required: true, pattern: SLUG }) ?? "",
    name: c.string(m, "name", path, { required: true, pattern: DISPLAY_TEXT }) ?? "",
  };
}

function readPlan(c: Checker, m: Mapping, path: string): PlanRule {
  const plan: PlanRule = {
    name: c.string(m, "name", path, { required: true, pattern: SLUG }) ?? "",
    entitlements: readEntitlements(c, m, "entitlements", path),
  };
  const description = c.string(m, "description", path, { required: false, pattern: DESCRIPTION });
  if (description !== undefined) plan.description = description;
  return plan;
}

function readLicense(c: Checker, m: Mapping, path: string): LicenseRule {
  const license: LicenseRule = {
    id: c.string(m, "id", path, { required: true, pattern: SLUG }) ?? "",
    account: c.string(m, "account", path, { required: true, pattern: SLUG }) ?? "",
    plan: c.string(m, "plan", path, { required: true, pattern: SLUG }) ?? "",
    status: c.choice(m, "status", path, LICENSE_STATUSES, "active") ?? "active",
    environments: c.names(m, "environments", path, NAME),
    overrides: readEntitlements(c, m, "overrides", path),
  };
  const validFrom = c.timestamp(m, "valid_from", path);
  const validUntil = c.timestamp(m, "valid_until", path);
  if (validFrom !== undefined) license.valid_from = validFrom;
  if (validUntil !== undefined) license.valid_until = validUntil;
  if (validFrom !== undefined && validUntil !== undefined && validFrom >= validUntil) {
    c.report(at(path, "valid_until"), "must be after valid_from");
  }
  return license;
}

function readApiKey(c: Checker, m: Mapping, path: string): ApiKeyRule {
  const key: ApiKeyRule = {
    id: c.string(m, "id", path, { required: true, pattern: SLUG }) ?? "",
    license: c.string(m, "license", path, { required: true, pattern: SLUG }) ?? "",
    scopes: c.names(m, "scopes", path, NAME),
    revoked: c.boolean(m, "revoked", path, false),
  };
  const expiresAt = c.timestamp(m, "expires_at", path);
  if (expiresAt !== undefined) key.expires_at = expiresAt;
  return key;
}

function readIssuer(c: Checker, m: Mapping, path: string): IssuerRule {
  const issuer: IssuerRule = {
    id: c.string(m, "id", path, { required: true, pattern: SLUG }) ?? "",
    issuer: c.string(m, "issuer", path, { required: true, pattern: ISSUER }) ?? "",
    jwks_url: readJwksUrl(c, m, path),
    audiences: readAudiences(c, m, path),
    algorithms: readAlgorithms(c, m, path),
    leeway_seconds: readLeeway(c, m, path),
    roles_claim: c.string(m, "roles_claim", path, { required: false, pattern: CLAIM }) ?? ISSUER_DEFAULTS.roles_claim,
  };
  const licenseClaim = c.string(m, "license_claim", path, { required: false, pattern: CLAIM });
  const accountClaim = c.string(m, "account_claim", path, { required: false, pattern: CLAIM });
  assignDefined(issuer, "license_claim", licenseClaim);
  assignDefined(issuer, "account_claim", accountClaim);
  // Presence is judged on the raw fields, so a present-but-invalid claim is not also "missing".
  const hasLicense = field(m, "license_claim") !== undefined;
  const hasAccount = field(m, "account_claim") !== undefined;
  if (hasLicense && hasAccount) c.report(at(path, "account_claim"), "not allowed together with license_claim (set exactly one)");
  if (!hasLicense && !hasAccount) c.report(path, "must set exactly one of license_claim and account_claim");
  return issuer;
}

function readJwksUrl(c: Checker, m: Mapping, path: string): string {
  const value = c.string(m, "jwks_url", path, { required: true });
  if (value === undefined) return "";
  const url = URL.canParse(value) ? new URL(value) : undefined;
  if (url === undefined || (url.protocol !== "https:" && url.protocol !== "http:") || value.length > 2048) {
    c.report(at(path, "jwks_url"), "must be an http:// or https:// URL of at most 2048 characters");
  } else if (url.username !== "" || url.password !== "") {
    // Credentials in the URL would be exported and logged with it.
    c.report(at(path, "jwks_url"), "must not contain a user name or password");
  }
  return value;
}

function readAudiences(c: Checker, m: Mapping, path: string): string[] {
  const audiences = c.names(m, "audiences", path, AUDIENCE);
  const raw = field(m, "audiences");
  // A token must name an audience we expect; an issuer without one would accept none.
  if (raw === undefined) c.report(at(path, "audiences"), "required (at least one audience)");
  else if (isEmptyList(raw)) c.report(at(path, "audiences"), "must list at least one audience");
  return audiences;
}

function readAlgorithms(c: Checker, m: Mapping, path: string): IssuerRule["algorithms"] {
  const algorithms = c.choiceList(m, "algorithms", path, { choices: JWT_ALGORITHMS, explain: explainAlgorithm });
  if (algorithms === undefined) return [...ISSUER_DEFAULTS.algorithms];
  if (isEmptyList(field(m, "algorithms"))) c.report(at(path, "algorithms"), "must list at least one algorithm");
  return algorithms;
}

/** Why a refused algorithm is refused: the two classic JWT attacks get a message of their own. */
function explainAlgorithm(value: string): string {
  if (value.toLowerCase() === "none") return '"none" is never allowed: unsigned tokens prove nothing';
  if (/^HS\d+$/i.test(value)) {
    return `"${value}" is not allowed: shared-secret (HS*) algorithms cannot be verified with a public key set`;
  }
  return `must be one of: ${JWT_ALGORITHMS.join(", ")}`;
}

function readLeeway(c: Checker, m: Mapping, path: string): number {
  const leeway = c.integer(m, "leeway_seconds", path);
  if (leeway === undefined) return ISSUER_DEFAULTS.leeway_seconds;
  if (leeway > MAX_LEEWAY_SECONDS) c.report(at(path, "leeway_seconds"), `must be at most ${MAX_LEEWAY_SECONDS}`);
  return leeway;
}

function readRoute(c: Checker, m: Mapping, path: string): RouteRule {
  const route: RouteRule = {
    id: c.string(m, "id", path, { required: true, pattern: SLUG }) ?? "",
    path_prefix: c.string(m, "path_prefix", path, { required: true, pattern: PATH_PREFIX }) ?? "/",
    feature: c.string(m, "feature", path, { required: true, pattern: FEATURE_KEY }) ?? "",
    cost: c.integer(m, "cost", path) ?? 1,
  };
  assignDefined(route, "method", c.string(m, "method", path, { required: false, pattern: HTTP_METHOD }));
  return route;
}

function readServiceToken(c: Checker, m: Mapping, path: string): ServiceTokenRule {
  const rights = c.choiceList(m, "rights", path, { choices: SERVICE_TOKEN_RIGHTS });
  if (rights === undefined) c.report(at(path, "rights"), `required (one or more of: ${SERVICE_TOKEN_RIGHTS.join(", ")})`);
  else if (isEmptyList(field(m, "rights"))) c.report(at(path, "rights"), "must list at least one right");
  const token: ServiceTokenRule = {
    id: c.string(m, "id", path, { required: true, pattern: SLUG }) ?? "",
    rights: rights ?? [],
    revoked: c.boolean(m, "revoked", path, false),
  };
  assignDefined(token, "expires_at", c.timestamp(m, "expires_at", path));
  return token;
}

/**
 * A plan's entitlements or a licence's overrides: at most one per (feature, kind) (a feature may
 * carry several limits, e.g. a quota and a rate), sorted by feature, then kind.
 */
function readEntitlements(c: Checker, owner: Mapping, key: string, ownerPath: string): EntitlementRule[] {
  const path = at(ownerPath, key);
  const items = readMappings(c, field(owner, key), path, ENTITLEMENT_KEYS).map(({ m, path: p }) => ({
    rule: readEntitlement(c, m, p),
    path: p,
    // An invalid kind (already reported) was read as "boolean": it cannot collide with anything.
    kindValid: isEntitlementKind(field(m, "kind")),
  }));
  checkUniqueEntitlements(c, items.filter((item) => item.kindValid));
  return items.map(({ rule }) => rule).sort(compareEntitlements);
}

/** Order of entitlements in a normalized document: by feature, then kind. */
export function compareEntitlements(a: EntitlementRule, b: EntitlementRule): number {
  return compareStrings(a.feature, b.feature) || compareStrings(a.kind, b.kind);
}

function checkUniqueEntitlements(c: Checker, items: ReadonlyArray<{ rule: EntitlementRule; path: string }>): void {
  const first = new Map<string, string>();
  for (const { rule, path } of items) {
    if (rule.feature === "") continue;
    const key = entitlementKey(rule);
    const earlier = first.get(key);
    if (earlier === undefined) first.set(key, path);
    else {
      c.report(at(path, "kind"), `duplicate entitlement: feature "${rule.feature}" already has one of kind ${rule.kind} (first declared at ${earlier})`);
    }
  }
}

function readEntitlement(c: Checker, m: Mapping, path: string): EntitlementRule {
  const entitlement: EntitlementRule = {
    feature: c.string(m, "feature", path, { required: true, pattern: FEATURE_KEY }) ?? "",
    kind: c.choice(m, "kind", path, ENTITLEMENT_KINDS) ?? "boolean",
    overage: c.choice(m, "overage", path, OVERAGE_POLICIES, "block") ?? "block",
    failure_mode: c.choice(m, "failure_mode", path, FAILURE_MODES, "fail_closed") ?? "fail_closed",
    roles: c.names(m, "roles", path, NAME),
  };
  assignDefined(entitlement, "limit", c.integer(m, "limit", path));
  assignDefined(entitlement, "period", c.string(m, "period", path, { required: false }) as EntitlementPeriod | undefined);
  assignDefined(entitlement, "burst", c.integer(m, "burst", path));
  assignDefined(entitlement, "unit_price", c.integer(m, "unit_price", path));
  const scaling = field(m, "scaling");
  if (scaling !== undefined) assignDefined(entitlement, "scaling", readScaling(c, scaling, at(path, "scaling")));
  // Kind rules only make sense once the kind itself is known to be valid.
  if (isEntitlementKind(field(m, "kind"))) checkKindRules(c, m, entitlement, path);
  return entitlement;
}

function readScaling(c: Checker, value: unknown, path: string): ScalingRule | undefined {
  const m = c.mapping(value, path, SCALING_KEYS);
  if (m === undefined) return undefined;
  const min = c.integer(m, "min", path);
  const max = c.integer(m, "max", path);
  if (field(m, "min") === undefined) c.report(at(path, "min"), "required");
  if (field(m, "max") === undefined) c.report(at(path, "max"), "required");
  const scaling: ScalingRule = { min: min ?? 0, max: max ?? 0 };
  assignDefined(scaling, "step", c.integer(m, "step", path));
  assignDefined(scaling, "target_utilization", c.number(m, "target_utilization", path));
  assignDefined(scaling, "scale_up_cooldown_seconds", c.integer(m, "scale_up_cooldown_seconds", path));
  assignDefined(scaling, "scale_down_cooldown_seconds", c.integer(m, "scale_down_cooldown_seconds", path));
  assignDefined(scaling, "budget_per_period", c.integer(m, "budget_per_period", path));
  if (scaling.step === 0) c.report(at(path, "step"), "must be at least 1");
  const target = scaling.target_utilization;
  if (target !== undefined && !(target > 0 && target <= 1)) {
    c.report(at(path, "target_utilization"), "must be greater than 0 and at most 1");
  }
  readThresholds(c, m, scaling, path);
  const auto = field(m, "auto");
  if (auto !== undefined) assignDefined(scaling, "auto", readAuto(c, auto, at(path, "auto")));
  return scaling;
}

/** Up/down thresholds: both or neither, 0 ≤ down < up ≤ 1, never with target_utilization. */
function readThresholds(c: Checker, m: Mapping, scaling: ScalingRule, path: string): void {
  assignDefined(scaling, "scale_up_threshold", c.number(m, "scale_up_threshold", path));
  assignDefined(scaling, "scale_down_threshold", c.number(m, "scale_down_threshold", path));
  const up = scaling.scale_up_threshold;
  const down = scaling.scale_down_threshold;
  const hasUp = field(m, "scale_up_threshold") !== undefined;
  const hasDown = field(m, "scale_down_threshold") !== undefined;
  if (hasUp !== hasDown) {
    c.report(at(path, hasUp ? "scale_down_threshold" : "scale_up_threshold"), "required together with the other threshold");
  }
  if ((hasUp || hasDown) && field(m, "target_utilization") !== undefined) {
    c.report(at(path, "target_utilization"), "not allowed together with scale_up_threshold/scale_down_threshold (choose one mode)");
  }
  if (up !== undefined && !(up > 0 && up <= 1)) c.report(at(path, "scale_up_threshold"), "must be greater than 0 and at most 1");
  if (down !== undefined && !(down >= 0 && down < 1)) c.report(at(path, "scale_down_threshold"), "must be at least 0 and less than 1");
  else if (up !== undefined && down !== undefined && down >= up) {
    c.report(at(path, "scale_down_threshold"), `must be less than scale_up_threshold (${up})`);
  }
}

function readAuto(c: Checker, value: unknown, path: string): AutoScalingRule | undefined {
  const m = c.mapping(value, path, AUTO_KEYS);
  if (m === undefined) return undefined;
  const auto: AutoScalingRule = { source: c.choice(m, "source", path, AUTO_SCALING_SOURCES) ?? "utilization" };
  assignDefined(auto, "quota_feature", c.string(m, "quota_feature", path, { required: false, pattern: FEATURE_KEY }));
  assignDefined(auto, "horizon_seconds", c.integer(m, "horizon_seconds", path));
  const hasQuota = field(m, "quota_feature") !== undefined;
  if (auto.source === "quota" && !hasQuota) c.report(at(path, "quota_feature"), "required when source is quota");
  if (auto.source !== "quota" && hasQuota) c.report(at(path, "quota_feature"), "allowed only when source is quota");
  if (auto.horizon_seconds === 0) c.report(at(path, "horizon_seconds"), "must be at least 1");
  return auto;
}

/** Reports the second and later occurrences of a key; empty keys (already reported) are skipped. */
function checkUnique<T>(
  c: Checker,
  items: ReadonlyArray<{ rule: T; path: string }>,
  keyOf: (rule: T) => string,
  keyField: string,
): void {
  const first = new Map<string, string>();
  for (const { rule, path } of items) {
    const key = keyOf(rule);
    if (key === "") continue;
    const earlier = first.get(key);
    if (earlier === undefined) first.set(key, path);
    else c.report(at(path, keyField), `duplicate ${keyField} "${key}" (first declared at ${earlier})`);
  }
}

function checkLicenseReferences(
  c: Checker,
  licenses: ReadonlyArray<{ rule: LicenseRule; path: string }>,
  accounts: ReadonlyArray<{ rule: AccountRule }>,
  plans: ReadonlyArray<{ rule: PlanRule }>,
): void {
  const accountIds = new Set(accounts.map(({ rule }) => rule.id));
  const planNames = new Set(plans.map(({ rule }) => rule.name));
  for (const { rule, path } of licenses) {
    if (rule.account !== "" && !accountIds.has(rule.account)) {
      c.report(at(path, "account"), `unknown account "${rule.account}"`);
    }
    if (rule.plan !== "" && !planNames.has(rule.plan)) c.report(at(path, "plan"), `unknown plan "${rule.plan}"`);
  }
}

function checkKeyReferences(
  c: Checker,
  keys: ReadonlyArray<{ rule: ApiKeyRule; path: string }>,
  licenses: ReadonlyArray<{ rule: LicenseRule }>,
): void {
  const licenseIds = new Set(licenses.map(({ rule }) => rule.id));
  for (const { rule, path } of keys) {
    if (rule.license !== "" && !licenseIds.has(rule.license)) {
      c.report(at(path, "license"), `unknown license "${rule.license}"`);
    }
  }
}

function sortedBy<T>(items: ReadonlyArray<{ rule: T }>, keyOf: (rule: T) => string): T[] {
  return items.map(({ rule }) => rule).sort((a, b) => compareStrings(keyOf(a), keyOf(b)));
}

function isEntitlementKind(value: unknown): boolean {
  return typeof value === "string" && (ENTITLEMENT_KINDS as readonly string[]).includes(value);
}

function isEmptyList(value: unknown): boolean {
  return Array.isArray(value) && value.length === 0;
}

/** Sets an optional property only when the value is defined, so absent stays absent. */
function assignDefined<T extends object, K extends keyof T>(target: T, key: K, value: T[K] | undefined): void {
  if (value !== undefined) target[key] = value;
}
