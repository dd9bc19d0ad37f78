/**
 * The database's current licensing state as a normalized rules document: what Apply diffs
 * against and what Export prints. Reads only; pass a transaction to read a consistent snapshot.
 */
import type { Kysely, Selectable } from "kysely";
import type {
  ApiKeysTable,
  Database,
  EntitlementsTable,
  IssuersTable,
  LicensesTable,
  ServiceTokensTable,
} from "../store/schema.js";
import { compareStrings } from "./checker.js";
import type {
  ApiKeyRule,
  AutoScalingRule,
  AutoScalingSource,
  EntitlementRule,
  IssuerRule,
  JwtAlgorithm,
  LicenseRule,
  PlanRule,
  RulesDocument,
  ScalingRule,
  ServiceTokenRight,
  RouteRule,
  ServiceTokenRule,
} from "./types.js";
import { AUTO_SCALING_SOURCES, RULES_VERSION } from "./types.js";
import { compareEntitlements } from "./validate.js";

/**
 * Every account, plan, licence (with its overrides), API key, issuer and service token, sorted
 * as types.ts says.
 */
export async function readRules(db: Kysely<Database>): Promise<RulesDocument> {
  // One query after another, not Promise.all: inside a transaction they share one connection.
  const accounts = await db.selectFrom("accounts").select(["id", "name"]).execute();
  const plans = await db.selectFrom("plans").select(["name", "description"]).execute();
  const licenses = await db.selectFrom("licenses").selectAll().execute();
  const entitlements = await db.selectFrom("entitlements").selectAll().execute();
  const keys = await db.selectFrom("api_keys").selectAll().execute();
  const issuers = await db.selectFrom("issuers").selectAll().execute();
  const serviceTokens = await db.selectFrom("service_tokens").selectAll().execute();
  const routes = await db.selectFrom("routes").select(["id", "method", "path_prefix", "feature", "cost"]).execute();
  return {
    version: RULES_VERSION,
    accounts: accounts.map((a) => ({ id: a.id, name: a.name })).sort((a, b) => compareStrings(a.id, b.id)),
    plans: plans
      .map((p) => toPlanRule(p, entitlements.filter((e) => e.plan === p.name)))
      .sort((a, b) => compareStrings(a.name, b.name)),
    licenses: licenses
      .map((l) => toLicenseRule(l, entitlements.filter((e) => e.license_id === l.id)))
      .sort((a, b) => compareStrings(a.id, b.id)),
    api_keys: keys.map(toApiKeyRule).sort((a, b) => compareStrings(a.id, b.id)),
    issuers: issuers.map(toIssuerRule).sort((a, b) => compareStrings(a.id, b.id)),
    service_tokens: serviceTokens.map(toServiceTokenRule).sort((a, b) => compareStrings(a.id, b.id)),
    routes: routes.map(toRouteRule).sort((a, b) => compareStrings(a.id, b.id)),
  };
}

type EntitlementRow = Selectable<EntitlementsTable>;

function toRouteRule(row: { id: string; method: string; path_prefix: string; feature: string; cost: number }): RouteRule {
  const route: RouteRule = { id: row.id, path_prefix: row.path_prefix, feature: row.feature, cost: row.cost };
  if (row.method !== "*") route.method = row.method;
  return route;
}

function toPlanRule(plan: { name: string; description: string | null }, rows: EntitlementRow[]): PlanRule {
  const rule: PlanRule = { name: plan.name, entitlements: toEntitlementRules(rows) };
  if (plan.description !== null) rule.description = plan.description;
  return rule;
}

function toLicenseRule(row: Selectable<LicensesTable>, overrides: EntitlementRow[]): LicenseRule {
  const rule: LicenseRule = {
    id: row.id,
    account: row.account_id,
    plan: row.plan,
    status: row.status,
    environments: sortedNames(row.environments),
    overrides: toEntitlementRules(overrides),
  };
  if (row.valid_from !== null) rule.valid_from = isoString(row.valid_from);
  if (row.valid_until !== null) rule.valid_until = isoString(row.valid_until);
  return rule;
}

function toApiKeyRule(row: Selectable<ApiKeysTable>): ApiKeyRule {
  const rule: ApiKeyRule = {
    id: row.id,
    license: row.license_id,
    scopes: sortedNames(row.scopes),
    revoked: row.revoked_at !== null,
  };
  if (row.expires_at !== null) rule.expires_at = isoString(row.expires_at);
  return rule;
}

function toIssuerRule(row: Selectable<IssuersTable>): IssuerRule {
  const rule: IssuerRule = {
    id: row.id,
    issuer: row.issuer,
    jwks_url: row.jwks_url,
    audiences: sortedNames(row.audiences),
    // Written only by Apply from validated documents; a foreign value fails re-validation.
    algorithms: sortedNames(row.algorithms) as JwtAlgorithm[],
    leeway_seconds: Number(row.leeway_seconds),
    roles_claim: row.roles_claim,
  };
  if (row.license_claim !== null) rule.license_claim = row.license_claim;
  if (row.account_claim !== null) rule.account_claim = row.account_claim;
  return rule;
}

function toServiceTokenRule(row: Selectable<ServiceTokensTable>): ServiceTokenRule {
  const rule: ServiceTokenRule = {
    id: row.id,
    rights: sortedNames(row.rights) as ServiceTokenRight[],
    revoked: row.revoked_at !== null,
  };
  if (row.expires_at !== null) rule.expires_at = isoString(row.expires_at);
  return rule;
}

function toEntitlementRules(rows: EntitlementRow[]): EntitlementRule[] {
  return rows.map(toEntitlementRule).sort(compareEntitlements);
}

function toEntitlementRule(row: EntitlementRow): EntitlementRule {
  const rule: EntitlementRule = {
    feature: row.feature,
    kind: row.kind,
    overage: row.overage,
    failure_mode: row.failure_mode,
    roles: sortedNames(row.roles),
  };
  if (row.limit !== null) rule.limit = Number(row.limit);
  if (row.period !== null) rule.period = row.period;
  if (row.burst !== null) rule.burst = Number(row.burst);
  if (row.unit_price !== null) rule.unit_price = Number(row.unit_price);
  const scaling = toScalingRule(row.scaling);
  if (scaling !== undefined) rule.scaling = scaling;
  return rule;
}

const SCALING_FIELDS = [
  "min", "max", "step", "target_utilization", "scale_up_cooldown_seconds", "scale_down_cooldown_seconds",
  "budget_per_period", "scale_up_threshold", "scale_down_threshold",
] as const;

/**
 * The jsonb scaling column as a ScalingRule. Only the documented numeric fields are kept: Apply
 * writes nothing else, and anything else (written by another tool) could not be re-applied.
 */
export function toScalingRule(value: unknown): ScalingRule | undefined {
  const parsed: unknown = typeof value === "string" ? JSON.parse(value) : value;
  if (typeof parsed !== "object" || parsed === null) return undefined;
  const source = parsed as Record<string, unknown>;
  const rule: ScalingRule = { min: numberOr(source.min, 0), max: numberOr(source.max, 0) };
  for (const key of SCALING_FIELDS) {
    const n = source[key];
    if (typeof n === "number") rule[key] = n;
  }
  const auto = toAutoScalingRule(source.auto);
  if (auto !== undefined) rule.auto = auto;
  return rule;
}

/** The stored `auto` object, with the same keep-only-documented-fields rule. */
function toAutoScalingRule(value: unknown): AutoScalingRule | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const source = value as Record<string, unknown>;
  const kind = (AUTO_SCALING_SOURCES as readonly unknown[]).includes(source.source) ? (source.source as AutoScalingSource) : undefined;
  if (kind === undefined) return undefined;
  const rule: AutoScalingRule = { source: kind };
  if (typeof source.quota_feature === "string") rule.quota_feature = source.quota_feature;
  if (typeof source.horizon_seconds === "number") rule.horizon_seconds = source.horizon_seconds;
  return rule;
}

function numberOr(value: unknown, fallback: number): number {
  return typeof value === "number" ? value : fallback;
}

function sortedNames(names: readonly string[]): string[] {
  return [...names].sort(compareStrings);
}

/** Timestamps are read as Date; a string (a driver without the Date parser) is normalized too. */
function isoString(value: Date | string): string {
  return new Date(value).toISOString();
}
